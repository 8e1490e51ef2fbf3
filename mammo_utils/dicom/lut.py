"""Pure pixel stages of PS3.3 C.11, arrays in and arrays out, in the order the standard prescribes:

    stored values -> Modality LUT (C.11.1: RescaleSlope/Intercept, or a Modality LUT Sequence)
                  -> VOI LUT (C.11.2: a VOI LUT Sequence, else WindowCenter/Width with VOILUTFunction
                     LINEAR, LINEAR_EXACT or SIGMOID, else min-max)
                  -> MONOCHROME1 inverted (C.7.6.3.1.2), so the breast is bright on black.

Stored values are integers, so :func:`build_display_lut` fuses the three stages into one table with
an entry per stored value; :func:`apply_display_lut` then costs one lookup per pixel. A
:class:`Display` (from :func:`make_display`) holds that table for one image, so it can be applied to
any crop or resize of the image.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass
class Window:
    """A VOI window as applied: center/width in Modality LUT output units, and the function."""

    center: float
    width: float
    function: str = "LINEAR"

    def __str__(self) -> str:
        return f"{self.function}(c={self.center:g},w={self.width:g})"


@dataclass
class LutData:
    """A LUT as DICOM stores it: LUTDescriptor (entries, first mapped value, bits) and LUTData."""

    descriptor: tuple[int, int, int]
    data: np.ndarray


def apply_modality_lut(stored: np.ndarray, slope: float = 1.0, intercept: float = 0.0) -> np.ndarray:
    """Rescale stored values to modality units, PS3.3 C.11.1.1.2: ``slope * SV + intercept``."""
    out = stored.astype(np.float32)
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)
    return out


def apply_window(x: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """VOI windowing to [0, 1], exactly as PS3.3 C.11.2.1.2 defines it (ymin=0, ymax=1).

    LINEAR (C.11.2.1.2.1) needs width >= 1; LINEAR_EXACT (C.11.2.1.3.2) and SIGMOID (C.11.2.1.3.1)
    need width > 0. Unknown functions raise ``NotImplementedError``.
    """
    function = (function or "LINEAR").strip().upper()
    c, w = float(center), float(width)
    x = x.astype(np.float32, copy=False)
    if function == "LINEAR":
        if w < 1:
            raise ValueError(f"LINEAR window width must be >= 1, got {w}")
        if w == 1:  # degenerate case: a step at c - 0.5
            return (x > c - 0.5).astype(np.float32)
        y = (x - np.float32(c - 0.5)) / np.float32(w - 1) + np.float32(0.5)
        return np.clip(y, 0.0, 1.0, out=y)
    if function == "LINEAR_EXACT":
        if w <= 0:
            raise ValueError(f"LINEAR_EXACT window width must be > 0, got {w}")
        y = (x - np.float32(c)) / np.float32(w) + np.float32(0.5)
        return np.clip(y, 0.0, 1.0, out=y)
    if function == "SIGMOID":
        if w <= 0:
            raise ValueError(f"SIGMOID window width must be > 0, got {w}")
        z = np.float32(-4.0 / w) * (x - np.float32(c))
        with np.errstate(over="ignore"):
            return (1.0 / (1.0 + np.exp(z))).astype(np.float32)
    raise NotImplementedError(f"VOILUTFunction {function!r} is not supported (LINEAR, LINEAR_EXACT, SIGMOID)")


def apply_lut(x: np.ndarray, descriptor, data: np.ndarray) -> np.ndarray:
    """Apply a LUT given by LUTDescriptor (entries, first mapped value, bits) and LUTData, scaled to [0, 1].

    PS3.3 C.11.2.1.1: values below the first mapped value take the first entry, values above the
    last take the last entry. An entry count of 0 means 65536 (C.11.1.1.1).
    """
    n_entries, first, bits = (int(v) for v in descriptor)
    data = np.asarray(data, dtype=np.float32).ravel()
    data = data[:n_entries or 65536]
    idx = np.clip(np.rint(x).astype(np.int64) - first, 0, len(data) - 1)
    top = float(2 ** bits - 1) if bits > 0 else float(data.max() or 1)
    return np.clip(data[idx] / top, 0.0, 1.0).astype(np.float32)


def stretch(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """[lo, hi] mapped linearly onto [0, 1] and clipped (in ``x``'s float type); zeros when the range is empty."""
    if hi <= lo:
        return np.zeros(x.shape, np.float32)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def apply_minmax(x: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
    """Stretch to [0, 1] when the file has no window; pixels where ``ignore`` is set do not count."""
    vals = x[~ignore] if ignore is not None and ignore.any() and not ignore.all() else x
    return stretch(x.astype(np.float32, copy=False), float(vals.min()), float(vals.max()))


def apply_modality(x: np.ndarray, slope: float = 1.0, intercept: float = 0.0,
                   modality_lut: LutData | None = None) -> np.ndarray:
    """The Modality LUT stage: the sequence when the file has one (C.11.1), else the rescale."""
    if modality_lut is not None:
        return apply_lut(x, modality_lut.descriptor, modality_lut.data) * np.float32(2 ** int(modality_lut.descriptor[2]) - 1)
    return apply_modality_lut(x, slope, intercept)


def apply_voi(m: np.ndarray, window: Window | None = None, voi_lut: LutData | None = None,
              ignore: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """The VOI LUT stage on modality values: a VOI LUT Sequence wins, then the window, then min-max.
    Returns the [0, 1] image and a description of what was applied."""
    if voi_lut is not None:
        return apply_lut(m, voi_lut.descriptor, voi_lut.data), "VOILUTSequence"
    if window is not None:
        return apply_window(m, window.center, window.width, window.function), str(window)
    return apply_minmax(m, ignore), "minmax"


def build_display_lut(lo: int, hi: int, slope: float = 1.0, intercept: float = 0.0,
                      modality_lut: LutData | None = None, window: Window | None = None,
                      voi_lut: LutData | None = None, invert: bool = False,
                      minmax_range: tuple[int, int] | None = None) -> tuple[np.ndarray, str]:
    """One float32 table for stored values ``lo..hi``: Modality LUT -> VOI -> inversion fused.

    ``table[sv - lo]`` equals the three stages applied to ``sv``. Without a window or VOI LUT the
    min-max stretch needs the image's stored-value range, ``minmax_range``.
    """
    sv = np.arange(lo, hi + 1, dtype=np.float64)
    m = apply_modality(sv, slope, intercept, modality_lut)
    if voi_lut is None and window is None:
        a, b = minmax_range if minmax_range is not None else (lo, hi)
        ends = apply_modality(np.array([a, b], np.float64), slope, intercept, modality_lut)
        m_lo, m_hi = float(ends.min()), float(ends.max())
        table = stretch(m, m_lo, m_hi)
        used = "minmax"
    else:
        table, used = apply_voi(m, window, voi_lut)
    table = table.astype(np.float32)
    if invert:
        table = np.float32(1.0) - table
    return table, used


def apply_display_lut(stored: np.ndarray, table: np.ndarray, lo: int) -> np.ndarray:
    """Look stored integers up in a table from :func:`build_display_lut` (values outside it are clamped).

    ``np.take`` rather than ``table[stored]``: 2.6x faster on a 1024x512 uint16 image."""
    if lo == 0 and stored.dtype.kind == "u" and int(stored.max(initial=0)) < len(table):
        return np.take(table, stored)
    return np.take(table, np.clip(stored.astype(np.int64) - lo, 0, len(table) - 1))


def usable_mask(mask: np.ndarray | None) -> np.ndarray | None:
    """A padding mask worth using: None when absent, empty or covering the whole image."""
    return mask if mask is not None and mask.any() and not mask.all() else None


def to_uint(img: np.ndarray, bits: int = 8) -> np.ndarray:
    """[0, 1] float -> uint8 (bits=8) or uint16 (bits=16), rounded."""
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    top = 255.0 if bits == 8 else 65535.0
    return np.rint(np.clip(img, 0.0, 1.0) * top).astype(np.uint8 if bits == 8 else np.uint16)


def from_uint(img: np.ndarray) -> np.ndarray:
    """uint8 / uint16 -> float32 in [0, 1]: the inverse of :func:`to_uint`."""
    top = 65535.0 if img.dtype == np.uint16 else 255.0
    return img.astype(np.float32) / np.float32(top)


@dataclass
class Display:
    """Stored values -> display values in [0, 1] for one image (Modality LUT, VOI, inversion).

    Built once from the whole image (a min-max stretch needs its range), then applied to the image
    or to any crop or resize of it: that is what lets preprocessing crop and resize the stored values
    and look up only the output pixels. Integer data uses one fused table; float data the stages.
    """

    used_voi: str
    table: np.ndarray | None = None       # integer data: table[sv - lo]
    lo: int = 0
    slope: float = 1.0                    # float data: the stages, with the min-max range fixed
    intercept: float = 0.0
    modality_lut: LutData | None = None
    window: Window | None = None
    voi_lut: LutData | None = None
    invert: bool = False
    minmax: tuple[float, float] | None = None

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        """float32 display image of ``arr`` (a fresh array)."""
        if self.table is not None and arr.dtype.kind in "ui":
            return np.ascontiguousarray(apply_display_lut(arr, self.table, self.lo), dtype=np.float32)
        m = apply_modality(arr, self.slope, self.intercept, self.modality_lut)
        if self.voi_lut is not None or self.window is not None:
            img = apply_voi(m, self.window, self.voi_lut)[0]
        else:
            img = stretch(m, *self.minmax)
        if self.invert:
            img = np.subtract(np.float32(1.0), img)
        return np.ascontiguousarray(img, dtype=np.float32)

    def saturation_range(self) -> tuple[int, int] | None:
        """Stored values (a, b) outside which the table is constant (the window saturates), or None.

        Clamping stored values to [a, b] changes no displayed pixel, and makes averaging stored
        values before a LINEAR window equal to averaging the displayed values (up to rounding):
        air far below the window no longer darkens the skin line of a reduced image."""
        t = self.table
        if t is None or len(t) < 3:
            return None
        inner = np.flatnonzero(t != t[0])
        if not len(inner):
            return None
        first = max(int(inner[0]) - 1, 0)
        last = min(int(np.flatnonzero(t != t[-1])[-1]) + 1, len(t) - 1)
        return self.lo + first, self.lo + last

    @cached_property
    def linear(self) -> bool:
        """Whether the table is a straight line between the ends of its saturation range (a LINEAR or
        LINEAR_EXACT window, a min-max stretch): then averaging stored values and looking the average
        up equals averaging displayed values, to rounding. SIGMOID and VOI LUT Sequences are curved."""
        ends = self.saturation_range()
        if ends is None:
            return False
        t = self.table[ends[0] - self.lo + 1:ends[1] - self.lo].astype(np.float64)  # between the kinks
        if len(t) < 3:
            return True
        line = np.linspace(t[0], t[-1], len(t))
        return float(np.abs(t - line).max()) < 0.25 / 65535  # off the straight line by < 1/4 of a 16-bit level

    def to_uint(self, arr: np.ndarray, bits: int = 8) -> np.ndarray:
        """Display values of ``arr`` as uint8/uint16 (:func:`mammo_utils.prepare.png.to_uint` of ``self(arr)``);
        integer data takes one lookup in a quantized table, with no float image in between."""

        if self.table is not None and arr.dtype.kind in "ui":
            return apply_display_lut(arr, to_uint(self.table, bits), self.lo)
        return to_uint(self(arr), bits)


def value_range(arr: np.ndarray, where: np.ndarray | None = None) -> tuple[int, int]:
    """(min, max) of a 2-D integer image in one pass (OpenCV), optionally over the pixels ``where`` is set."""
    import cv2

    if arr.ndim != 2 or arr.dtype not in (np.uint8, np.uint16, np.int16, np.int8):
        vals = arr[where] if where is not None else arr
        return int(vals.min()), int(vals.max())
    mask = where.view(np.uint8) if where is not None else None
    lo, hi, _, _ = cv2.minMaxLoc(arr if arr.dtype != np.int8 else arr.astype(np.int16), mask)
    return int(lo), int(hi)


def make_display(arr: np.ndarray, pad_mask: np.ndarray | None = None, slope: float = 1.0, intercept: float = 0.0,
                 modality_lut: LutData | None = None, window: Window | None = None, voi_lut: LutData | None = None,
                 invert: bool = False) -> Display:
    """The :class:`Display` of one stored image; padding pixels do not count towards a min-max stretch."""
    pad_mask = usable_mask(pad_mask)
    if arr.dtype.kind in "ui" and arr.dtype.itemsize <= 2:
        lo, hi = value_range(arr)
        valid = value_range(arr, ~pad_mask) if pad_mask is not None else (lo, hi)
        if arr.dtype.kind == "u":
            lo = 0  # a table from 0 is indexed by the stored values directly (no offset, no clip)
        table, used_voi = build_display_lut(lo, hi, slope, intercept, modality_lut, window, voi_lut, invert,
                                            minmax_range=valid)
        return Display(used_voi, table, lo)
    valid = arr[~pad_mask] if pad_mask is not None else arr
    minmax = None
    used_voi = "VOILUTSequence" if voi_lut is not None else str(window) if window is not None else "minmax"
    if voi_lut is None and window is None:
        m = apply_modality(valid, slope, intercept, modality_lut)
        minmax = (float(m.min()), float(m.max()))
    return Display(used_voi, None, 0, slope, intercept, modality_lut, window, voi_lut, invert, minmax)


def apply_display(arr: np.ndarray, pad_mask: np.ndarray | None = None, slope: float = 1.0, intercept: float = 0.0,
                  modality_lut: LutData | None = None, window: Window | None = None, voi_lut: LutData | None = None,
                  invert: bool = False, zero_padding: bool = True) -> tuple[np.ndarray, str]:
    """Stored values -> display image in [0, 1]: Modality LUT, VOI (min-max without a window, ignoring
    padding), inversion, then padding set to 0 (unless ``zero_padding=False``).
    Returns (float32 image, description of the VOI stage)."""
    display = make_display(arr, pad_mask, slope, intercept, modality_lut, window, voi_lut, invert)
    img = display(arr)
    pad_mask = usable_mask(pad_mask)
    if zero_padding and pad_mask is not None:
        img[pad_mask] = 0.0  # padding is background by definition (PS3.3 C.7.5.1.1.2); img is a fresh array
    return img, display.used_voi

"""Decode one file to a display-ready image: stored values -> reduced size -> one fused LUT.

Order of :func:`read_dicom`: decode the stored values (a reduced JPEG 2000 level when the caller
needs less), area-reduce other formats by the same power of two, then Modality LUT, VOI LUT and
MONOCHROME1 inversion as one lookup table (:func:`.lut.build_display_lut`), and padding to 0.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from .dataset import (
    JPEG2000_SYNTAXES,
    JPEG_LOSSLESS_SYNTAXES,
    NATIVE_SYNTAXES,
    DicomReadError,
    first_value,
    is_multi,
    open_dataset,
    plain_value,
    transfer_syntax,
)
from .decoders import BACKENDS, DECODERS, backend_order, choose_reduction, is_available
from .lut import Display, LutData, Window, make_display, usable_mask

__all__ = ["DicomImage", "Display", "StoredImage", "Window", "read_dicom", "read_image", "read_metadata",
           "read_stored", "read_stored_image"]

# Header fields read_metadata reports (keyword -> output column).
META_KEYWORDS = (
    "PatientID", "SOPInstanceUID", "SOPClassUID", "Modality", "Manufacturer", "ManufacturerModelName",
    "ImageLaterality", "ViewPosition", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "PhotometricInterpretation", "RescaleSlope", "RescaleIntercept",
    "WindowCenter", "WindowWidth", "VOILUTFunction", "PixelPaddingValue", "NumberOfFrames",
)


@dataclass
class DicomImage:
    """Result of :func:`read_dicom`: the display-ready image plus what is needed to interpret it."""

    image: np.ndarray                 # float32 HxW in [0, 1], breast bright
    source_shape: tuple[int, int]     # (Rows, Columns) of the stored image
    scale: float                      # source pixels per output pixel (2**k after a reduced decode)
    photometric: str
    voi: str                          # which VOI transform was used, e.g. "SIGMOID(c=2048,w=4096)"
    backend: str
    frames: int = 1                   # NumberOfFrames; only the first is read
    meta: dict = field(default_factory=dict)


def read_metadata(path) -> dict:
    """Header fields of one file without decoding pixels (fast enough for 54k files)."""
    ds = open_dataset(path, stop_before_pixels=True)
    meta = {"path": str(path)}
    for kw in META_KEYWORDS:
        meta[kw] = plain_value(ds.get(kw))
    meta["TransferSyntaxUID"] = transfer_syntax(ds) or None
    meta["has_voi_lut_sequence"] = "VOILUTSequence" in ds
    meta["file_bytes"] = os.path.getsize(path)
    return meta


def _lut_item(item) -> LutData:
    desc = tuple(int(v) for v in item.LUTDescriptor)
    raw = item.LUTData
    if isinstance(raw, (bytes, bytearray)):
        dtype = np.uint8 if desc[2] <= 8 and len(raw) == (desc[0] or 65536) else np.uint16
        raw = np.frombuffer(raw, dtype=dtype)
    return LutData(desc, np.asarray(raw))


def voi_from_header(ds, window_index: int) -> tuple[Window | None, LutData | None]:
    """(window, VOI LUT) of the header; a VOI LUT Sequence wins over WindowCenter/Width (C.11.2)."""
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        return None, _lut_item(ds.VOILUTSequence[min(window_index, len(ds.VOILUTSequence) - 1)])
    center, width = first_value(ds.get("WindowCenter"), window_index), first_value(ds.get("WindowWidth"), window_index)
    if center is None or width is None:
        return None, None
    function = first_value(ds.get("VOILUTFunction"), window_index) or "LINEAR"
    return Window(float(center), float(width), str(function).strip().upper()), None


def modality_from_header(ds) -> tuple[float, float, LutData | None]:
    """(RescaleSlope, RescaleIntercept, Modality LUT Sequence item or None), PS3.3 C.11.1."""
    if "ModalityLUTSequence" in ds and len(ds.ModalityLUTSequence):
        return 1.0, 0.0, _lut_item(ds.ModalityLUTSequence[0])
    return float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0), None


def _check_geometry(path, ds) -> None:
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows < 2 or cols < 2:
        raise DicomReadError(path, f"image is {rows}x{cols} (Rows x Columns): no usable pixels")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DicomReadError(path, f"SamplesPerPixel {ds.SamplesPerPixel}: not a grayscale image")


def _needs_pixel_bytes(syntax: str, backend: str, signed: bool, min_size) -> bool:
    """Whether pydicom must read the Pixel Data bytes: not when dicomsdl decodes from the file itself."""
    return syntax in NATIVE_SYNTAXES or backend_order(backend, syntax, signed, min_size)[0] != "dicomsdl"


def read_stored(path, backend: str = "auto", min_size=None):
    """Decode stored pixel values. Returns (array, scale, dataset, backend used).

    When dicomsdl decodes (JPEG Lossless, JPEG-LS, RLE), pydicom reads the header only: dicomsdl reads
    the file itself, and reading the pixel bytes twice cost ~10 % of a real-size file's preprocessing.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    ds = open_dataset(path, stop_before_pixels=True)
    _check_geometry(path, ds)
    syntax = transfer_syntax(ds)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    if _needs_pixel_bytes(syntax, backend, signed, min_size):
        ds = open_dataset(path, stop_before_pixels=False)
        if "PixelData" not in ds:
            raise DicomReadError(path, "no Pixel Data (7FE0,0010) element")
    if syntax in NATIVE_SYNTAXES:  # a short buffer crashes some C++ decoders: check it here
        bits = int(ds.get("BitsAllocated", 16))
        pixels = int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames", 1) or 1)
        expected = math.ceil(pixels / 8) if bits == 1 else pixels * ((bits + 7) // 8)  # 1 bit: packed (PS3.5 8.1.1)
        if len(ds.PixelData) < expected:
            raise DicomReadError(path, f"file is truncated: Pixel Data holds {len(ds.PixelData)} bytes, "
                                       f"{expected} expected")
    errors = []
    for name in backend_order(backend, syntax, signed, min_size):
        if name == "pillow" and syntax not in JPEG2000_SYNTAXES:
            raise DicomReadError(path, f"backend 'pillow' decodes JPEG 2000 only, not {syntax}")
        if name == "imagecodecs" and syntax not in JPEG_LOSSLESS_SYNTAXES:
            raise DicomReadError(path, f"backend 'imagecodecs' decodes JPEG Lossless only, not {syntax}")
        if not is_available(name):
            errors.append(f"{name}: not installed")
            continue
        try:
            arr, scale = DECODERS[name](path, ds, min_size)
        except Exception as exc:  # noqa: BLE001 - the next backend may succeed; all reasons are reported
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        if arr.ndim == 3 and scale == 1 and arr.shape[1:] == (ds.Rows, ds.Columns):
            arr = arr[0]  # multi-frame: the first frame (DicomImage.frames says how many there were)
        if arr.ndim != 2:
            raise DicomReadError(path, f"expected a single grayscale frame, got array shape {arr.shape}")
        expected = (math.ceil(int(ds.Rows) / scale), math.ceil(int(ds.Columns) / scale))
        if arr.shape != expected:
            errors.append(f"{name}: decoded shape {arr.shape} != expected {expected}")
            continue
        return arr, scale, ds, name
    if "PixelData" not in open_dataset(path, stop_before_pixels=False):
        raise DicomReadError(path, "no Pixel Data (7FE0,0010) element")
    raise DicomReadError(path, f"cannot decode pixel data (transfer syntax {syntax or 'unknown'}): " + "; ".join(errors))


def area_reduce(arr: np.ndarray, k: int) -> np.ndarray:
    """Area-average by 2**k per axis (ceil-sized, like a reduced J2K decode); integers stay integers.

    ``k`` halvings, each OpenCV's vectorised 2x area path when the size is even. OpenCV rounds each
    average to the input's integer type: within half a stored value after one halving (the usual
    k = 1), one after more; below half an 8-bit output level for any window of width >= 512.
    """
    import cv2

    if arr.dtype not in (np.uint8, np.uint16, np.int16, np.float32):
        arr = arr.astype(np.float32)
    for _ in range(k):
        arr = cv2.resize(arr, (math.ceil(arr.shape[1] / 2), math.ceil(arr.shape[0] / 2)), interpolation=cv2.INTER_AREA)
    return arr


def reduce_for(arr: np.ndarray, scale: int, ds, min_size):
    """(stored values, scale, padding mask) at the size the caller needs.

    No wavelet pyramid to exploit (JPEG Lossless, RLE, native, or J2K decoded in full): reduce by the
    same power of two a J2K reduced decode would, before any LUT, so the table is applied to few pixels.
    The padding mask (PS3.3 C.7.5.1.1.2 PixelPaddingValue) is taken before and reduced with it.
    """
    padding = ds.get("PixelPaddingValue")
    pad_value = int(padding) if padding is not None and not isinstance(padding, (bytes, list)) else None
    pad_mask = (arr == pad_value) if pad_value is not None else None
    if min_size and scale == 1:
        k = choose_reduction(arr.shape, min_size, 8)
        if k:
            import cv2

            arr = area_reduce(arr, k)
            if pad_mask is not None:
                pad_mask = cv2.resize(pad_mask.view(np.uint8), arr.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
            scale = 2 ** k
    return arr, scale, pad_mask


def header_windows(ds) -> list[Window]:
    """Every window the header offers (WindowCenter/WindowWidth may be multi-valued): viewer presets."""
    centers = ds.get("WindowCenter")
    if centers is None:
        return []
    n = len(centers) if is_multi(centers) else 1
    return [w for w in (voi_from_header(ds, i)[0] for i in range(n)) if w is not None]


@dataclass
class StoredImage:
    """Result of :func:`read_stored_image`: stored values at the needed size and how to display them."""

    stored: np.ndarray                # integer (or float) stored values, possibly reduced by ``scale``
    display: Display
    pad_mask: np.ndarray | None       # PixelPaddingValue pixels (None when there are none)
    source_shape: tuple[int, int]
    scale: float
    photometric: str
    backend: str
    frames: int = 1
    meta: dict = field(default_factory=dict)
    modality: tuple = (1.0, 0.0, None)  # (RescaleSlope, RescaleIntercept, Modality LUT) of the header
    windows: list = field(default_factory=list)  # every window the header offers (viewer presets)

    @classmethod
    def from_display(cls, img: np.ndarray) -> "StoredImage":
        """An image already in the display convention (float in [0, 1], breast bright), displayed as is."""
        img = np.asarray(img, dtype=np.float32)
        return cls(img, Display("identity", minmax=(0.0, 1.0)), None, img.shape, 1.0, "MONOCHROME2", "array")

    def with_window(self, window: Window) -> Display:
        """The display of these stored values under another window (a viewer's slider): the same
        Modality LUT and MONOCHROME1 inversion as the header's display, only the VOI stage differs."""
        slope, intercept, modality_lut = self.modality
        return make_display(self.stored, self.pad_mask, slope, intercept, modality_lut, window, None,
                            self.photometric == "MONOCHROME1")


def read_stored_image(path, backend: str = "auto", min_size=None, window_index: int = 0, voi: bool = True,
                      invert_monochrome1: bool = True, window: Window | None = None,
                      clamp: bool = True) -> StoredImage:
    """Decode one file to stored values at the size the caller needs, plus its :class:`Display`.

    Arguments as in :func:`read_dicom`, which is this followed by the display of the whole image.
    ``clamp``: clip stored values to the display's saturation points (cheaper resampling); a viewer
    that changes the window later keeps them whole with ``clamp=False``.
    """
    arr, scale, ds, used = read_stored(path, backend, min_size)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomReadError(path, f"PhotometricInterpretation {photometric!r} is not grayscale")
    arr, scale, pad_mask = reduce_for(arr, scale, ds, min_size)
    pad_mask = usable_mask(pad_mask)
    slope, intercept, modality_lut = modality_from_header(ds)
    if window is not None:
        header_window, voi_lut = window, None
    else:
        header_window, voi_lut = voi_from_header(ds, window_index) if voi else (None, None)
    invert = photometric == "MONOCHROME1" and invert_monochrome1
    try:
        display = make_display(arr, pad_mask, slope, intercept, modality_lut, header_window, voi_lut, invert)
    except (ValueError, NotImplementedError) as exc:
        raise DicomReadError(path, f"invalid VOI LUT: {exc}") from exc
    saturation = display.saturation_range() if clamp and display.linear else None
    if saturation is not None and arr.flags.writeable:
        arr = np.clip(arr, *saturation, out=arr if arr.flags.owndata else None)
    meta = {kw: plain_value(ds.get(kw)) for kw in ("BitsStored", "PhotometricInterpretation", "Rows", "Columns")}
    meta["TransferSyntaxUID"] = transfer_syntax(ds)
    return StoredImage(arr, display, pad_mask, (int(ds.Rows), int(ds.Columns)), float(scale), photometric, used,
                       int(ds.get("NumberOfFrames", 1) or 1), meta, (slope, intercept, modality_lut), header_windows(ds))


def read_dicom(path, backend: str = "auto", min_size=None, window_index: int = 0, voi: bool = True,
               invert_monochrome1: bool = True, padding_to_background: bool = True,
               window: Window | None = None) -> DicomImage:
    """Decode one file to a display-ready float32 image in [0, 1] and describe what was done.

    ``min_size`` (H, W): the smallest image the caller needs; JPEG 2000 files are then decoded at
    the coarsest wavelet level that still covers it, other files are area-averaged by the same power
    of two right after decoding (``scale`` says by how much). ``voi=False`` skips windowing (min-max
    of the modality values instead); ``window`` overrides the header's window (a viewer's slider);
    ``invert_monochrome1=False`` and ``padding_to_background=False`` show the file as stored.
    ``window_index`` picks one of several WindowCenter/WindowWidth values (PS3.3 C.11.2.1.2: all are
    valid alternatives).
    """
    s = read_stored_image(path, backend, min_size, window_index, voi, invert_monochrome1, window)
    try:
        img = s.display(s.stored)
    except (ValueError, NotImplementedError) as exc:
        raise DicomReadError(path, f"invalid VOI LUT: {exc}") from exc
    if padding_to_background and s.pad_mask is not None:
        img[s.pad_mask] = 0.0  # padding is background by definition (PS3.3 C.7.5.1.1.2)
    return DicomImage(img, s.source_shape, s.scale, s.photometric, s.display.used_voi, s.backend, s.frames, s.meta)


def read_image(path, backend: str = "auto", min_size=None, window_index: int = 0, voi: bool = True) -> np.ndarray:
    """float32 HxW in [0, 1], breast bright on a dark background. See :func:`read_dicom`."""
    return read_dicom(path, backend=backend, min_size=min_size, window_index=window_index, voi=voi).image

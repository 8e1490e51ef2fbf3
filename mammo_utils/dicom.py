"""Read (and, for the synthetic data, write) mammography DICOM files.

This is the only module that imports pydicom, dicomsdl or gdcm. Everything it returns is plain numpy.

Pixel pipeline of :func:`read_image`, in the order PS3.3 C.11 prescribes:

    stored values -> Modality LUT (C.11.1: RescaleSlope/Intercept, or a Modality LUT Sequence)
                  -> VOI LUT (C.11.2: a VOI LUT Sequence, else WindowCenter/Width with
                     VOILUTFunction LINEAR, LINEAR_EXACT or SIGMOID, else min-max)
                  -> MONOCHROME1 inverted (C.7.6.3.1.2), so the breast is bright on black.

Decoding backends (same stored values, different speed):

* ``dicomsdl``  fastest for JPEG Lossless (.4.70), JPEG-LS, RLE and native files.
* ``pydicom``   pydicom 3 with its plugins (gdcm, pylibjpeg); the universal fallback.
* ``pillow``    JPEG 2000 only: OpenJPEG through Pillow, which can decode a coarser wavelet level
                (``Image.reduce``) when the caller only needs a smaller image (``min_size``).
"""
from __future__ import annotations

import io
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

JPEG2000_SYNTAXES = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}
BACKENDS = ("auto", "dicomsdl", "pydicom", "pillow")

# Header fields read_metadata reports (keyword -> output column).
_META_KEYWORDS = (
    "PatientID", "SOPInstanceUID", "SOPClassUID", "Modality", "Manufacturer", "ManufacturerModelName",
    "ImageLaterality", "ViewPosition", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "PhotometricInterpretation", "RescaleSlope", "RescaleIntercept",
    "WindowCenter", "WindowWidth", "VOILUTFunction", "PixelPaddingValue", "NumberOfFrames",
)


class DicomReadError(Exception):
    """A file could not be read as a mammogram; the message names the file and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass
class Window:
    """A VOI window as applied: center/width in Modality LUT output units, and the function."""

    center: float
    width: float
    function: str = "LINEAR"

    def __str__(self) -> str:
        return f"{self.function}(c={self.center:g},w={self.width:g})"


@dataclass
class DicomImage:
    """Result of :func:`read_dicom`: the display-ready image plus what is needed to interpret it."""

    image: np.ndarray                 # float32 HxW in [0, 1], breast bright
    source_shape: tuple[int, int]     # (Rows, Columns) of the stored image
    scale: float                      # source pixels per output pixel (2**k after a reduced decode)
    photometric: str
    voi: str                          # which VOI transform was used, e.g. "SIGMOID(c=2048,w=4096)"
    backend: str
    meta: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# Pure pixel operations (arrays in, arrays out)
# --------------------------------------------------------------------------------------------------

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
    """Apply a LUT given by LUTDescriptor (entries, first mapped value, bits) and LUTData.

    PS3.3 C.11.2.1.1: values below the first mapped value take the first entry, values above the
    last take the last entry. Output is scaled to [0, 1] by the LUT's bit depth.
    """
    n_entries, first, bits = (int(v) for v in descriptor)
    data = np.asarray(data, dtype=np.float32).ravel()
    n_entries = n_entries or 65536
    data = data[:n_entries]
    idx = np.clip(np.rint(x).astype(np.int64) - first, 0, len(data) - 1)
    out = data[idx]
    # Some writers declare 16 bits but use fewer: scale by the real maximum the descriptor allows.
    top = float(2 ** bits - 1) if bits > 0 else float(data.max() or 1)
    return np.clip(out / top, 0.0, 1.0).astype(np.float32)


def apply_minmax(x: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
    """Stretch to [0, 1] when the file has no window; pixels where ``ignore`` is set do not count."""
    vals = x[~ignore] if ignore is not None and ignore.any() and not ignore.all() else x
    lo, hi = float(vals.min()), float(vals.max())
    if hi <= lo:
        return np.zeros(x.shape, np.float32)
    y = (x.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)
    return np.clip(y, 0.0, 1.0, out=y)


# --------------------------------------------------------------------------------------------------
# Header access
# --------------------------------------------------------------------------------------------------

def _first(value, index: int = 0):
    """DICOM multi-valued (VM>1) fields arrive as lists; take element ``index`` (clamped)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        seq = list(value)
        if not seq:
            return None
        return seq[min(index, len(seq) - 1)]
    return value


def _plain(value):
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    if isinstance(value, (int, float, str)):
        return value
    return str(value)


def _read_dataset(path, stop_before_pixels: bool):
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.is_file():
        raise DicomReadError(path, "file not found")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
        for w in caught:
            if "End of file reached" in str(w.message) or "truncated" in str(w.message).lower():
                raise DicomReadError(path, f"file is truncated ({w.message})")
        return ds
    except InvalidDicomError:
        pass
    except DicomReadError:
        raise
    except Exception as exc:  # truncated headers, bad lengths...
        raise DicomReadError(path, f"unreadable DICOM header ({type(exc).__name__}: {exc})") from exc
    # No 128-byte preamble: accept only if it really parses as an image header.
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
        if "Rows" in ds and "Columns" in ds:
            return ds
    except Exception:
        pass
    raise DicomReadError(path, "not a DICOM file (no DICM preamble and no image header)")


def read_metadata(path) -> dict:
    """Header fields of one file without decoding pixels (fast enough for 54k files)."""
    ds = _read_dataset(path, stop_before_pixels=True)
    meta = {"path": str(path)}
    for kw in _META_KEYWORDS:
        meta[kw] = _plain(ds.get(kw))
    fm = getattr(ds, "file_meta", None)
    meta["TransferSyntaxUID"] = str(fm.TransferSyntaxUID) if fm is not None and "TransferSyntaxUID" in fm else None
    meta["has_voi_lut_sequence"] = "VOILUTSequence" in ds
    meta["file_bytes"] = os.path.getsize(path)
    return meta


def _window_from_header(ds, window_index: int) -> tuple[Window | None, tuple | None]:
    """Return (window, lut) from the header; a VOI LUT Sequence wins over WindowCenter/Width."""
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        item = ds.VOILUTSequence[min(window_index, len(ds.VOILUTSequence) - 1)]
        desc = list(item.LUTDescriptor)
        raw = item.LUTData
        if isinstance(raw, (bytes, bytearray)):
            dtype = np.uint8 if int(desc[2]) <= 8 and len(raw) == int(desc[0] or 65536) else np.uint16
            raw = np.frombuffer(raw, dtype=dtype)
        return None, (desc, np.asarray(raw))
    center, width = _first(ds.get("WindowCenter"), window_index), _first(ds.get("WindowWidth"), window_index)
    if center is None or width is None:
        return None, None
    function = _first(ds.get("VOILUTFunction"), window_index) or "LINEAR"
    return Window(float(center), float(width), str(function).strip().upper()), None


# --------------------------------------------------------------------------------------------------
# Decoders: each returns stored values (integers, as the file holds them) and a reduction factor
# --------------------------------------------------------------------------------------------------

def _j2k_codestream(ds) -> bytes:
    from pydicom.encaps import generate_frames

    return next(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))


def _j2k_header(codestream: bytes) -> tuple[int, bool, int]:
    """(precision, signed, decomposition levels) from the SIZ and COD markers (ITU-T T.800 A.5.1, A.6.1)."""
    precision, signed, levels = 16, False, 0
    i = codestream.find(b"\xff\x51")
    if i >= 0:
        ssiz = codestream[i + 2 + 38]
        precision, signed = (ssiz & 0x7F) + 1, bool(ssiz & 0x80)
    j = codestream.find(b"\xff\x52")
    if j >= 0:
        levels = codestream[j + 2 + 2 + 1 + 4]
    return precision, signed, levels


def choose_reduction(shape: tuple[int, int], min_size: tuple[int, int] | None, max_levels: int) -> int:
    """Largest k such that the image decoded at 1/2**k still covers ``min_size`` (HxW) in both axes."""
    if not min_size:
        return 0
    k = 0
    while k < max_levels:
        h, w = math.ceil(shape[0] / 2 ** (k + 1)), math.ceil(shape[1] / 2 ** (k + 1))
        if h < min_size[0] or w < min_size[1]:
            break
        k += 1
    return k


def _decode_pillow(path, ds, min_size) -> tuple[np.ndarray, int]:
    from PIL import Image

    stream = _j2k_codestream(ds)
    precision, signed, levels = _j2k_header(stream)
    if signed:
        raise NotImplementedError("signed JPEG 2000 data is not decoded by the Pillow backend")
    k = choose_reduction((int(ds.Rows), int(ds.Columns)), min_size, levels)
    with Image.open(io.BytesIO(stream)) as im:
        im.reduce = k
        im.load()
        arr = np.asarray(im)
    if arr.dtype != np.uint8 and precision < 16:
        arr = arr.astype(np.uint16, copy=False) >> (16 - precision)
    return arr, 2 ** k


def _decode_dicomsdl(path, ds, min_size) -> tuple[np.ndarray, int]:
    import dicomsdl

    dcm = dicomsdl.open(str(path))
    arr = dcm.pixelData(storedvalue=True)
    return np.asarray(arr), 1


def _decode_pydicom(path, ds, min_size) -> tuple[np.ndarray, int]:
    if "PixelData" not in ds:  # caller read the header only
        ds = _read_dataset(path, stop_before_pixels=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(ds.pixel_array), 1


_DECODERS = {"dicomsdl": _decode_dicomsdl, "pydicom": _decode_pydicom, "pillow": _decode_pillow}


def _backend_order(backend: str, syntax: str, signed: bool, min_size) -> list[str]:
    if backend != "auto":
        return [backend]
    if syntax in JPEG2000_SYNTAXES:
        # Pillow/OpenJPEG when a coarser level is wanted; gdcm (via pydicom) is the fastest full decode.
        first = ["pillow"] if min_size and not signed else []
        return first + ["pydicom", "dicomsdl"]
    if syntax in NATIVE_SYNTAXES or not syntax:
        return ["pydicom", "dicomsdl"]  # numpy view of the bytes: nothing to gain from a C++ decoder
    return ["dicomsdl", "pydicom"]


def _available(name: str) -> bool:
    try:
        __import__({"dicomsdl": "dicomsdl", "pydicom": "pydicom", "pillow": "PIL"}[name])
        return True
    except ImportError:
        return False


# --------------------------------------------------------------------------------------------------
# Public readers
# --------------------------------------------------------------------------------------------------

def read_stored(path, backend: str = "auto", min_size=None):
    """Decode stored pixel values. Returns (array, scale, dataset, backend used)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    ds = _read_dataset(path, stop_before_pixels=False)
    if "PixelData" not in ds:
        raise DicomReadError(path, "no Pixel Data (7FE0,0010) element")
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    if syntax in NATIVE_SYNTAXES:  # a short buffer crashes some C++ decoders: check it here
        expected = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
                    * int(ds.get("NumberOfFrames", 1) or 1) * ((int(ds.get("BitsAllocated", 16)) + 7) // 8))
        if len(ds.PixelData) < expected:
            raise DicomReadError(path, f"file is truncated: Pixel Data holds {len(ds.PixelData)} bytes, "
                                       f"{expected} expected")
    errors = []
    for name in _backend_order(backend, syntax, signed, min_size):
        if name == "pillow" and syntax not in JPEG2000_SYNTAXES:
            raise DicomReadError(path, f"backend 'pillow' decodes JPEG 2000 only, not {syntax}")
        if not _available(name):
            errors.append(f"{name}: not installed")
            continue
        try:
            arr, scale = _DECODERS[name](path, ds, min_size)
        except Exception as exc:
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        if arr.ndim != 2:
            if arr.ndim == 3 and arr.shape[0] >= 1 and scale == 1 and arr.shape[1:] == (ds.Rows, ds.Columns):
                arr = arr[0]  # multi-frame: first frame
            else:
                raise DicomReadError(path, f"expected a single grayscale frame, got array shape {arr.shape}")
        expected = (math.ceil(int(ds.Rows) / scale), math.ceil(int(ds.Columns) / scale))
        if arr.shape != expected:
            errors.append(f"{name}: decoded shape {arr.shape} != expected {expected}")
            continue
        return arr, scale, ds, name
    raise DicomReadError(path, f"cannot decode pixel data (transfer syntax {syntax or 'unknown'}): " + "; ".join(errors))


def read_dicom(path, backend: str = "auto", min_size=None, window_index: int = 0, voi: bool = True,
               invert_monochrome1: bool = True, padding_to_background: bool = True) -> DicomImage:
    """Decode one file to a display-ready float32 image in [0, 1] and describe what was done.

    ``min_size`` (H, W): the smallest image the caller needs; JPEG 2000 files are then decoded at
    the coarsest wavelet level that still covers it, other files are area-averaged by the same power
    of two right after decoding (``scale`` says by how much). ``voi=False``
    skips windowing (min-max of the modality values instead); ``invert_monochrome1=False`` and
    ``padding_to_background=False`` show the file as stored. ``window_index`` picks one of several
    WindowCenter/WindowWidth values (PS3.3 C.11.2.1.2: all are valid alternatives).
    """
    arr, scale, ds, used = read_stored(path, backend, min_size)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomReadError(path, f"PhotometricInterpretation {photometric!r} is not grayscale")
    padding = ds.get("PixelPaddingValue")
    pad_mask = (arr == int(padding)) if padding is not None and not isinstance(padding, (bytes, list)) else None

    if "ModalityLUTSequence" in ds and len(ds.ModalityLUTSequence):
        item = ds.ModalityLUTSequence[0]
        desc = list(item.LUTDescriptor)
        x = apply_lut(arr, desc, np.asarray(item.LUTData)) * np.float32(2 ** int(desc[2]) - 1)
    else:
        x = apply_modality_lut(arr, float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0))

    if min_size and scale == 1:
        # No wavelet pyramid to exploit (JPEG Lossless, RLE, native, or J2K decoded in full): reduce by the
        # same power of two a J2K reduced decode would, with an area average, before the LUT stages.
        k = choose_reduction(x.shape, min_size, 8)
        if k:
            import cv2

            size = (math.ceil(x.shape[1] / 2 ** k), math.ceil(x.shape[0] / 2 ** k))
            x = cv2.resize(x, size, interpolation=cv2.INTER_AREA)
            if pad_mask is not None:
                pad_mask = cv2.resize(pad_mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
            scale = 2 ** k
    used_voi = "minmax"
    try:
        window, lut = _window_from_header(ds, window_index) if voi else (None, None)
        if lut is not None:
            img, used_voi = apply_lut(x, *lut), "VOILUTSequence"
        elif window is not None:
            img, used_voi = apply_window(x, window.center, window.width, window.function), str(window)
        else:
            img = apply_minmax(x, pad_mask)
    except (ValueError, NotImplementedError) as exc:
        raise DicomReadError(path, f"invalid VOI LUT: {exc}") from exc

    if photometric == "MONOCHROME1" and invert_monochrome1:
        img = np.subtract(np.float32(1.0), img, out=img)
    if padding_to_background and pad_mask is not None and pad_mask.any() and not pad_mask.all():
        img[pad_mask] = 0.0  # padding is background by definition (PS3.3 C.7.5.1.1.2)
    meta = {kw: _plain(ds.get(kw)) for kw in ("BitsStored", "PhotometricInterpretation", "Rows", "Columns")}
    meta["TransferSyntaxUID"] = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    return DicomImage(img.astype(np.float32, copy=False), (int(ds.Rows), int(ds.Columns)), float(scale),
                      photometric, used_voi, used, meta)


def read_image(path, backend: str = "auto", min_size=None, window_index: int = 0, voi: bool = True) -> np.ndarray:
    """float32 HxW in [0, 1], breast bright on a dark background. See :func:`read_dicom`."""
    return read_dicom(path, backend=backend, min_size=min_size, window_index=window_index, voi=voi).image


# --------------------------------------------------------------------------------------------------
# Writing (synthetic data and tests)
# --------------------------------------------------------------------------------------------------

TRANSFER_SYNTAXES = {
    "explicit": "1.2.840.10008.1.2.1",
    "rle": "1.2.840.10008.1.2.5",
    "j2k": "1.2.840.10008.1.2.4.90",
    "jpegls": "1.2.840.10008.1.2.4.80",
    "jpeg_lossless": JPEG_LOSSLESS_SV1,
}


def write_dicom(path, pixels: np.ndarray, attrs: dict, syntax: str = "explicit") -> None:
    """Write a single-frame grayscale image as a DICOM Part 10 file.

    ``pixels`` are stored values (uint16/uint8); ``attrs`` are extra dataset keywords (PatientID,
    WindowCenter, ...). ``syntax`` is a key of ``TRANSFER_SYNTAXES``. JPEG Lossless SV1 goes
    through gdcm (pydicom cannot encode it), J2K and RLE through pydicom's encoders.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UID, generate_uid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bits_stored = int(attrs.get("BitsStored", 16))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    sop_class = attrs.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.1.2")  # Digital Mammography X-Ray, For Presentation
    sop_uid = attrs.get("SOPInstanceUID") or generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyInstanceUID = attrs.get("StudyInstanceUID") or generate_uid()
    ds.SeriesInstanceUID = attrs.get("SeriesInstanceUID") or generate_uid()
    ds.Modality = "MG"
    ds.StudyDate, ds.StudyTime = "20200101", "000000"  # fixed: gdcm would otherwise stamp the clock
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16 if bits_stored > 8 else 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    for key, value in attrs.items():
        if key in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
            continue
        setattr(ds, key, value)
    dtype = np.uint16 if ds.BitsAllocated == 16 else np.uint8
    if int(ds.PixelRepresentation) == 1:
        dtype = np.int16 if ds.BitsAllocated == 16 else np.int8
    data = np.ascontiguousarray(pixels.astype(dtype))
    ds.PixelData = data.tobytes()
    ds["PixelData"].VR = "OW" if ds.BitsAllocated == 16 else "OB"

    if syntax in ("j2k", "rle", "jpegls"):
        ds.compress(UID(TRANSFER_SYNTAXES[syntax]), data, generate_instance_uid=False)
    elif syntax not in ("explicit", "jpeg_lossless"):
        raise ValueError(f"unknown syntax {syntax!r}; choose from {sorted(TRANSFER_SYNTAXES)}")
    tmp = path.with_name(path.name + ".tmp")
    ds.save_as(tmp, enforce_file_format=True)
    if syntax == "jpeg_lossless":
        _gdcm_transcode_jpeg_lossless(tmp, path)
        tmp.unlink()
    else:
        os.replace(tmp, path)


def _gdcm_transcode_jpeg_lossless(src: Path, dst: Path) -> None:
    """Re-encode a file to JPEG Lossless, Non-Hierarchical, First-Order Prediction (.4.70)."""
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    if not reader.Read():
        raise RuntimeError(f"gdcm could not read {src}")
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
    change.SetInput(reader.GetImage())
    if not change.Change():
        raise RuntimeError(f"gdcm could not transcode {src} to JPEG Lossless SV1")
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(dst))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    if not writer.Write():
        raise RuntimeError(f"gdcm could not write {dst}")

"""The lowest layer: transfer-syntax constants, the error type, and opening a file with pydicom."""
from __future__ import annotations

import warnings
from pathlib import Path

JPEG2000_SYNTAXES = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LOSSLESS_SYNTAXES = {"1.2.840.10008.1.2.4.57", JPEG_LOSSLESS_SV1}  # Process 14: any predictor, and SV1
NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}


class DicomReadError(Exception):
    """A file could not be read as a mammogram; the message names the file and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def is_multi(value) -> bool:
    """True for a multi-valued (VM > 1) element value: pydicom's MultiValue is a list subclass."""
    from pydicom.multival import MultiValue

    return isinstance(value, (list, tuple, MultiValue))


def first_value(value, index: int = 0):
    """Element ``index`` (clamped) of a multi-valued field; a single value passes through."""
    if value is None or not is_multi(value):
        return value
    seq = list(value)
    return seq[min(index, len(seq) - 1)] if seq else None


def plain_value(value):
    """A header value as a CSV-friendly scalar: multi-values joined with a backslash, as DICOM writes them."""
    if value is None:
        return None
    if is_multi(value):
        return "\\".join(str(v) for v in value)
    if isinstance(value, (int, float, str)):
        return value
    return str(value)


def transfer_syntax(ds) -> str:
    fm = getattr(ds, "file_meta", None)
    return str(fm.get("TransferSyntaxUID", "")) if fm is not None else ""


def open_dataset(path, stop_before_pixels: bool):
    """pydicom dataset of ``path``; every failure becomes a :class:`DicomReadError` naming the file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.is_file():
        raise DicomReadError(path, "file not found")
    if path.stat().st_size == 0:
        raise DicomReadError(path, "file is empty (0 bytes)")
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
    except Exception:  # noqa: BLE001 - any failure here means "not DICOM", reported below
        pass
    raise DicomReadError(path, "not a DICOM file (no DICM preamble and no image header)")

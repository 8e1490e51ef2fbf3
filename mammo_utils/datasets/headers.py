"""One parallel pass over an import's DICOM files: the header fields importers need, whether each
file is whole, and a key of its stored pixels (to find duplicates) - without decoding a pixel.

A file is whole when its pixel data ends inside it: a defined-length value (native pixels) must fit
in the file and hold Rows x Columns x SamplesPerPixel x NumberOfFrames x BitsAllocated / 8 bytes;
an encapsulated (compressed) value must end with its Sequence Delimitation Item (FFFE,E0DD), PS3.5
A.4. A copy cut short (an interrupted download) fails one of these, where the first 132 bytes
('DICM') and the header would pass.
"""
from __future__ import annotations

import hashlib
import os
import struct
import warnings

EDGE_BYTES = 1 << 16  # the quick pixel key reads this much from each end of the pixel data
DELIMITER_LE = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
PIXEL_TAGS_LE = {b"\xe0\x7f\x10\x00", b"\xe0\x7f\x08\x00", b"\xe0\x7f\x09\x00"}  # Pixel Data, Float, Double Float
PIXEL_TAGS_BE = {b"\x7f\xe0\x00\x10", b"\x7f\xe0\x00\x08", b"\x7f\xe0\x00\x09"}
PIXEL_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN"}
DEFLATED = "1.2.840.10008.1.2.1.99"


def _native_bytes(ds) -> int | None:
    """Bytes the header says native pixel data holds, or None when it does not say."""
    try:
        n = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * int(ds.get("NumberOfFrames", 1) or 1)
        bits = int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError):
        return None
    if str(ds.get("PhotometricInterpretation", "")).startswith("YBR_FULL_422"):
        n = n * 2 // 3  # two chroma samples shared by each pair of pixels (PS3.3 C.7.6.3.1.2)
    return (n * bits + 7) // 8


def _read_header(path: str, force: bool = False):
    """(header, offset where the header stops: the pixel data element) in one read."""
    import pydicom

    with open(path, "rb") as f:
        ds = pydicom.dcmread(f, stop_before_pixels=True, force=force)
        return ds, f.tell()


def pixel_span(path: str, ds, start: int | None = None) -> tuple[int, int] | str:
    """``(offset, length)`` of the stored pixel bytes in ``path`` (for encapsulated pixel data, up to its
    delimiter), or why the file is not whole. ``ds``: its header, already read; ``start``: where it
    stopped (read again when not given)."""
    from ..dicom.dataset import transfer_syntax

    size = os.path.getsize(path)
    if transfer_syntax(ds) == DEFLATED:
        return 0, size  # the whole dataset is deflated: no offset to find; the key covers the whole file
    if start is None:
        try:
            start = _read_header(path, force=True)[1]
        except Exception as exc:  # noqa: BLE001 - the header was read once already; any failure is a bad file
            return f"unreadable DICOM header ({type(exc).__name__}: {exc})"
    with open(path, "rb") as f:
        f.seek(start)
        head = f.read(12)
    little = head[:4] in PIXEL_TAGS_LE
    if not little and head[:4] not in PIXEL_TAGS_BE:
        return f"no pixel data: the file ends after its header ({size} bytes; truncated?)"
    order = "<" if little else ">"
    # Explicit VR unless the syntax is Implicit VR Little Endian or no VR stands where one would (a few files
    # are written implicitly under an explicit syntax; pydicom reads them with a warning).
    explicit = transfer_syntax(ds) != "1.2.840.10008.1.2" and head[4:6] in PIXEL_VRS
    length = struct.unpack(order + "I", head[8:12] if explicit else head[4:8])[0]
    at = start + (12 if explicit else 8)
    if length == 0xFFFFFFFF:  # encapsulated: fragments up to the sequence delimiter
        delimiter = DELIMITER_LE if little else b"\xff\xfe\xe0\xdd\x00\x00\x00\x00"
        with open(path, "rb") as f:
            f.seek(max(at, size - EDGE_BYTES))
            tail_at = f.tell()
            tail = f.read()
        end = tail.rfind(delimiter)
        if end < 0:
            return (f"file is truncated: its compressed pixel data has no end (no sequence delimiter in the last "
                    f"{len(tail)} of {size} bytes)")
        return at, tail_at + end - at
    if at + length > size:
        return f"file is truncated: its pixel data needs {length} bytes and {max(0, size - at)} are there"
    need = _native_bytes(ds)
    if need is not None and length < need:
        return f"pixel data holds {length} bytes; Rows x Columns x BitsAllocated need {need}"
    return at, length


def pixel_key(path: str, span: tuple[int, int]) -> str:
    """A quick key of the stored pixels: their length and both ends. Equal keys are confirmed with
    :func:`pixel_hash` before two images are called duplicates."""
    at, length = span
    h = hashlib.sha1(str(length).encode())
    with open(path, "rb") as f:
        f.seek(at)
        h.update(f.read(min(length, EDGE_BYTES)))
        if length > 2 * EDGE_BYTES:
            f.seek(at + length - EDGE_BYTES)
            h.update(f.read(EDGE_BYTES))
        elif length > EDGE_BYTES:
            h.update(f.read(length - EDGE_BYTES))
    return h.hexdigest()


def pixel_hash(path: str, span: tuple[int, int]) -> str:
    """SHA-1 of every stored pixel byte (encoded bytes where the file is compressed)."""
    at, length = span
    h = hashlib.sha1()
    with open(path, "rb") as f:
        f.seek(at)
        while length > 0:
            chunk = f.read(min(length, 1 << 22))
            if not chunk:
                break
            h.update(chunk)
            length -= len(chunk)
    return h.hexdigest()


def header_facts(path: str) -> dict | str:
    """What an importer reads from one DICOM file (no pixel decoded), or why the file cannot be imported:
    ``uid`` (SOPInstanceUID), ``rows``, ``columns``, ``laterality``, ``view_meaning`` (ViewCodeSequence),
    ``view_position``, ``span`` and ``pixel_key`` (see :func:`pixel_span`, :func:`pixel_key`)."""
    from ..dicom import DicomReadError
    from ..dicom.dataset import open_dataset

    try:  # one read of a well-formed file; anything unusual goes through open_dataset's checks and messages
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ds, start = _read_header(path)
    except Exception:  # noqa: BLE001
        try:
            ds, start = open_dataset(path, stop_before_pixels=True), None
        except DicomReadError as exc:
            return exc.reason
    span = pixel_span(path, ds, start)
    if isinstance(span, str):
        return span
    seq = ds.get("ViewCodeSequence")
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError) as exc:
        return f"no image size in the header ({exc})"
    return {"uid": str(ds.get("SOPInstanceUID") or ""), "rows": rows, "columns": columns,
            "laterality": str(ds.get("ImageLaterality") or ds.get("Laterality") or "").strip().upper()[:1],
            "view_meaning": str(seq[0].get("CodeMeaning", "")).strip().lower() if seq else "",
            "view_position": str(ds.get("ViewPosition") or "").strip(),
            "span": span, "pixel_key": pixel_key(path, span)}

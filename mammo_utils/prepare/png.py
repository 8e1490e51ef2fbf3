"""8/16-bit PNG encoding of [0, 1] images, and atomic writes (a killed run never leaves a torn file).

Grayscale PNGs are written as the PNG standard lays them out (signature, IHDR, one IDAT, IEND; ISO/IEC
15948 sections 5 and 11), each row "up"-filtered (the black background becomes runs of zeros) and
deflated by ISA-L (the ``isal`` package) at its level 1. On 1024x512 outputs of real-size files that
is 5.8x faster than zlib's run-length strategy for 1.2x the bytes (93 against 76 KiB), and 9x faster
and 7 % smaller than OpenCV's defaults (benchmarks/png.py). Without ``isal`` (a Kaggle image without
internet) OpenCV writes the file: other bytes, the same pixels.
"""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from ..dicom.lut import from_uint, to_uint  # noqa: F401 - PNG pixels are display values

try:
    from isal import isal_zlib
except ImportError:  # optional: the OpenCV fallback writes the same pixels, slower
    isal_zlib = None

# OpenCV's fastest good setting (the fallback): run-length deflate after the "up" filter.
# OpenCV < 4.11 has no filter flag and uses its default filter.
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
if hasattr(cv2, "IMWRITE_PNG_FILTER"):
    PNG_PARAMS += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FILTER_UP = 2


def load_png(path) -> np.ndarray:
    """8- or 16-bit PNG -> float32 HxW in [0, 1]."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return from_uint(img[..., 0] if img.ndim == 3 else img)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def up_filtered(img: np.ndarray) -> np.ndarray:
    """Scanlines of a grayscale image, each a filter-type byte then the bytes minus the bytes above
    (modulo 256; the first row has nothing above and is stored unfiltered). 16-bit samples are
    big-endian, as PNG stores them."""
    rows = np.ascontiguousarray(img, dtype=">u2" if img.dtype == np.uint16 else np.uint8).view(np.uint8)
    rows = rows.reshape(img.shape[0], -1)
    out = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
    out[0, 0], out[1:, 0] = 0, FILTER_UP
    out[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=out[1:, 1:])
    return out


def encode_png(img: np.ndarray) -> bytes:
    """A 2-D uint8 or uint16 image as PNG file bytes (ISA-L when installed, else OpenCV)."""
    if img.ndim != 2 or img.dtype not in (np.uint8, np.uint16) or img.size == 0:
        raise ValueError(f"encode_png expects a non-empty 2-D uint8/uint16 image, got {img.dtype} {img.shape}")
    if isal_zlib is None:
        ok, buf = cv2.imencode(".png", img, PNG_PARAMS)
        if not ok:
            raise ValueError(f"OpenCV could not encode a {img.dtype} {img.shape} image as PNG")
        return buf.tobytes()
    header = struct.pack(">IIBBBBB", img.shape[1], img.shape[0], 8 * img.itemsize, 0, 0, 0, 0)  # grayscale
    idat = isal_zlib.compress(up_filtered(img), 1)
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def write_png_atomic(path, img: np.ndarray) -> None:
    """Write via a temp file and rename, so a killed run never leaves a truncated PNG."""
    path = Path(path)
    data = encode_png(img)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

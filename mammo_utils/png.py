"""8/16-bit PNG encoding of [0, 1] images, and atomic writes (a killed run never leaves a torn file)."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np


# Fast lossless settings: run-length deflate (the black background is long runs) after the cheap
# "up" filter: on 1024x512 outputs of real-size files 3.2 ms and 76 KiB against 6.1 ms and 100 KiB
# for zlib level 1 with OpenCV's default filter.
# OpenCV < 4.11 has no filter flag and uses its default filter.
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
if hasattr(cv2, "IMWRITE_PNG_FILTER"):
    PNG_PARAMS += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]


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


def load_png(path) -> np.ndarray:
    """8- or 16-bit PNG -> float32 HxW in [0, 1]."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return from_uint(img[..., 0] if img.ndim == 3 else img)


def write_png_atomic(path, img: np.ndarray) -> None:
    """Write via a temp file and rename, so a killed run never leaves a truncated PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    if not cv2.imwrite(str(tmp), img, PNG_PARAMS):
        raise OSError(f"could not write {tmp}")
    os.replace(tmp, path)

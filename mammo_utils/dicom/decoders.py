"""Decoding backends: stored values from a file, each backend one function that declares its module.

Same stored values, different speed (measured in benchmarks/decode.py):

* ``imagecodecs``  JPEG Lossless (.4.57, .4.70) through libjpeg-turbo 3 (``imagecodecs.jpeg8_decode``):
                the fastest for it, 1.6x dicomsdl on real-size files, the same stored values.
* ``dicomsdl``  fastest for JPEG-LS, RLE and native files; JPEG Lossless without imagecodecs.
* ``pydicom``   pydicom 3 with its plugins (gdcm, pylibjpeg); the universal fallback.
* ``pillow``    JPEG 2000 only: OpenJPEG through Pillow, which can decode a coarser wavelet level
                (``Image.reduce``) when the caller only needs a smaller image (``min_size``).
"""
from __future__ import annotations

import importlib.util
import io
import math
import warnings

import numpy as np

from .dataset import (
    JPEG2000_SYNTAXES,
    JPEG_LOSSLESS_SYNTAXES,
    NATIVE_SYNTAXES,
    open_dataset,
)

BACKENDS = ("auto", "imagecodecs", "dicomsdl", "pydicom", "pillow")
_MODULE = {"imagecodecs": "imagecodecs", "dicomsdl": "dicomsdl", "pydicom": "pydicom", "pillow": "PIL"}


def is_available(name: str) -> bool:
    """Whether the backend's module is installed (checked without importing it)."""
    return importlib.util.find_spec(_MODULE[name]) is not None


def available_backends() -> list[str]:
    return [name for name in _MODULE if is_available(name)]


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


def _with_pixel_data(path, ds):
    """``ds``, read again with its Pixel Data when the caller read the header only."""
    return ds if "PixelData" in ds else open_dataset(path, stop_before_pixels=False)


def _first_frame(ds) -> bytes:
    """The first frame's bytes of encapsulated Pixel Data (PS3.5 A.4)."""
    from pydicom.encaps import generate_frames

    return next(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))


def j2k_header(codestream: bytes) -> tuple[int, bool, int]:
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


def decode_pillow(path, ds, min_size) -> tuple[np.ndarray, int]:
    """JPEG 2000 at the coarsest wavelet level that covers ``min_size``; returns (array, 2**k)."""
    from PIL import Image

    stream = _first_frame(ds)
    precision, signed, levels = j2k_header(stream)
    if signed:
        raise NotImplementedError("signed JPEG 2000 data is not decoded by the Pillow backend")
    k = choose_reduction((int(ds.Rows), int(ds.Columns)), min_size, levels)
    while True:
        try:
            with Image.open(io.BytesIO(stream)) as im:
                im.reduce = k
                im.load()
                arr = np.asarray(im)
            break
        except OSError:  # Pillow rejects some levels of odd-sized images ("broken data stream"): one finer
            if k == 0:
                raise
            k -= 1
    if arr.dtype != np.uint8 and precision < 16:  # Pillow scales to 16 bits
        arr = arr.astype(np.uint16, copy=False) >> (16 - precision)
    return arr, 2 ** k


def decode_imagecodecs(path, ds, min_size) -> tuple[np.ndarray, int]:
    """JPEG Lossless through libjpeg-turbo 3, which decodes lossless JPEG of 2 to 16 bits."""
    import imagecodecs

    return np.asarray(imagecodecs.jpeg8_decode(_first_frame(_with_pixel_data(path, ds)))), 1


def decode_dicomsdl(path, ds, min_size) -> tuple[np.ndarray, int]:
    import dicomsdl

    dcm = dicomsdl.open(str(path))
    if dcm.getDataElement("PixelData").tag() == 0:  # absent: decoding it would crash the interpreter
        raise ValueError("no Pixel Data element")
    return np.asarray(dcm.pixelData(storedvalue=True)), 1


def decode_pydicom(path, ds, min_size) -> tuple[np.ndarray, int]:
    ds = _with_pixel_data(path, ds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(ds.pixel_array), 1


DECODERS = {"imagecodecs": decode_imagecodecs, "dicomsdl": decode_dicomsdl, "pydicom": decode_pydicom,
            "pillow": decode_pillow}


def backend_order(backend: str, syntax: str, signed: bool, min_size) -> list[str]:
    """Backends to try, fastest first, for a transfer syntax."""
    if backend != "auto":
        return [backend]
    if syntax in JPEG2000_SYNTAXES:
        # Pillow/OpenJPEG when a coarser level is wanted; gdcm (via pydicom) is the fastest full decode.
        first = ["pillow"] if min_size and not signed else []
        return first + ["pydicom", "dicomsdl"]
    if syntax in NATIVE_SYNTAXES or not syntax:
        return ["pydicom", "dicomsdl"]  # numpy view of the bytes: nothing to gain from a C++ decoder
    if syntax in JPEG_LOSSLESS_SYNTAXES and not signed and is_available("imagecodecs"):
        return ["imagecodecs", "dicomsdl", "pydicom"]  # signed samples: dicomsdl applies the sign
    return ["dicomsdl", "pydicom"]

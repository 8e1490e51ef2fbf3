"""Read (and, for the synthetic data, write) mammography DICOM files.

The only subpackage that imports pydicom, imagecodecs, dicomsdl, gdcm or Pillow's JPEG 2000 codec. Everything it
returns is plain numpy. Split by stage, as pydicom 3's ``pixels`` is:

* :mod:`.dataset`   transfer-syntax constants, the error type, opening a file (lowest layer);
* :mod:`.lut`       the pure PS3.3 C.11 pixel stages (Modality LUT, VOI LUT, inversion) and their fusion
                    into one lookup table;
* :mod:`.decoders`  one backend each (imagecodecs/libjpeg-turbo, dicomsdl, pydicom, Pillow/OpenJPEG),
                    each saying whether it is installed;
* :mod:`.read`      ``read_image`` / ``read_dicom`` / ``read_metadata``: decode -> reduce -> LUT;
* :mod:`.write`     the only writer (synthetic data and tests).
"""
from .dataset import (
                   JPEG2000_SYNTAXES,
                   JPEG_LOSSLESS_SV1,
    JPEG_LOSSLESS_SYNTAXES,
    NATIVE_SYNTAXES,
    DicomReadError,
)
from .decoders import BACKENDS, available_backends, choose_reduction
from .lut import (
    apply_lut,
    apply_minmax,
    apply_modality_lut,
    apply_window,
    build_display_lut,
)
from .read import (
    DicomImage,
    Display,
    StoredImage,
    Window,
    read_dicom,
    read_image,
    read_metadata,
    read_stored,
    read_stored_image,
)
from .write import TRANSFER_SYNTAXES, make_uid, write_dicom

__all__ = [
    "BACKENDS", "JPEG2000_SYNTAXES", "JPEG_LOSSLESS_SV1", "JPEG_LOSSLESS_SYNTAXES", "NATIVE_SYNTAXES", "TRANSFER_SYNTAXES",
    "DicomImage", "DicomReadError", "Display", "StoredImage", "Window", "apply_lut", "apply_minmax", "apply_modality_lut", "apply_window",
    "available_backends", "build_display_lut", "choose_reduction", "make_uid", "read_dicom", "read_image",
    "read_metadata", "read_stored", "read_stored_image", "write_dicom",
]

"""The only DICOM writer: single-frame grayscale Part 10 files (synthetic data and tests)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .dataset import JPEG_LOSSLESS_SV1

TRANSFER_SYNTAXES = {
    "explicit": "1.2.840.10008.1.2.1",
    "rle": "1.2.840.10008.1.2.5",
    "j2k": "1.2.840.10008.1.2.4.90",
    "jpegls": "1.2.840.10008.1.2.4.80",
    "jpeg_lossless": JPEG_LOSSLESS_SV1,
}
_UID_KEYS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


def make_uid(*entropy) -> str:
    """A DICOM UID derived from ``entropy`` (deterministic), or a random one when none is given."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(e) for e in entropy]) if entropy else generate_uid()


def write_dicom(path, pixels: np.ndarray, attrs: dict, syntax: str = "explicit", overwrite: bool = True) -> None:
    """Write a single-frame grayscale image as a DICOM Part 10 file.

    ``pixels`` are stored values (uint16/uint8); ``attrs`` are extra dataset keywords (PatientID,
    WindowCenter, ...). ``syntax`` is a key of ``TRANSFER_SYNTAXES``. JPEG Lossless SV1 goes
    through gdcm (pydicom cannot encode it), J2K, JPEG-LS and RLE through pydicom's encoders.
    ``overwrite=False`` refuses to replace an existing file (FileExistsError).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian

    if syntax not in TRANSFER_SYNTAXES:
        raise ValueError(f"unknown syntax {syntax!r}; choose from {sorted(TRANSFER_SYNTAXES)}")
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    bits_stored = int(attrs.get("BitsStored", 16))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    sop_class = attrs.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.1.2")  # Digital Mammography X-Ray, For Presentation
    sop_uid = attrs.get("SOPInstanceUID") or make_uid()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyInstanceUID = attrs.get("StudyInstanceUID") or make_uid()
    ds.SeriesInstanceUID = attrs.get("SeriesInstanceUID") or make_uid()
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
        if key not in _UID_KEYS:
            setattr(ds, key, value)
    dtype = np.uint16 if ds.BitsAllocated == 16 else np.uint8
    if int(ds.PixelRepresentation) == 1:
        dtype = np.int16 if ds.BitsAllocated == 16 else np.int8
    data = np.ascontiguousarray(pixels.astype(dtype))
    ds.PixelData = data.tobytes()
    ds["PixelData"].VR = "OW" if ds.BitsAllocated == 16 else "OB"

    if syntax in ("j2k", "rle", "jpegls"):
        ds.compress(UID(TRANSFER_SYNTAXES[syntax]), data, generate_instance_uid=False)
    tmp = path.with_name(path.name + ".tmp")
    ds.save_as(tmp, enforce_file_format=True)
    if syntax == "jpeg_lossless":
        try:
            _gdcm_transcode_jpeg_lossless(tmp, path)
        finally:
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

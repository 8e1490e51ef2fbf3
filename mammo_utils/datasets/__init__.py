"""Public datasets into the RSNA layout: ``import_dataset`` (one dataset) and ``combine`` (several).

Every importer reads a dataset as downloaded and unpacked, finds its metadata files and images below
the source folder, and writes ``DST/train.csv`` (RSNA columns plus ``source`` and
``official_split``), ``DST/train_images/<patient_id>/<image_id>.dcm`` (links to the source's DICOMs,
or DICOM-wrapped copies of non-DICOM images), ``DST/lesions.csv`` and ``DST/import.json``.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from . import cbis, cmmd, inbreast, mias, vindr
from .combine import combine
from .common import LESION_COLUMNS, LESIONS_CSV, read_lesions, write_import
from .destination import IMPORT_JSON, check_destination, check_out

IMPORTERS = {"vindr": vindr, "cbis-ddsm": cbis, "cmmd": cmmd, "inbreast": inbreast, "mias": mias}
__all__ = ["IMPORTERS", "IMPORT_JSON", "LESIONS_CSV", "LESION_COLUMNS", "combine", "import_dataset", "labels",
           "read_lesions"]


def labels(name: str) -> dict[str, str]:
    """The label mappings a dataset offers (the first is the default), each described in words."""
    return IMPORTERS[name].LABELS


def import_dataset(name: str, src, out, copy: bool = False, label: str | None = None, jobs: int = -1,
                   progress: bool = True) -> dict:
    """Import one public dataset; returns the ``import.json`` record (counts, label mapping, skipped files)."""
    if name not in IMPORTERS:
        raise UserError(f"unknown dataset {name!r}; choose from {sorted(IMPORTERS)}")
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise UserError(f"{src}: not a folder; give the dataset as downloaded and unpacked")
    check_destination(src, out)
    prior = check_out(out, lambda r: r.get("source") == name and r.get("source_folder") == str(src.resolve()),
                      f"{name} from {src.resolve()}")
    module = IMPORTERS[name]
    label = label or next(iter(module.LABELS))
    if label not in module.LABELS:
        raise UserError(f"--label {label!r} is not a {name} mapping; choose from: "
                        + "; ".join(f"{k} ({v})" for k, v in module.LABELS.items()))
    kwargs = {"jobs": jobs, "progress": progress}
    if name == "mias":
        kwargs.update(out=out, prior=prior)
    imported = module.load(src, label, **kwargs)
    return write_import(imported, out, name, copy, label, src, progress, prior)

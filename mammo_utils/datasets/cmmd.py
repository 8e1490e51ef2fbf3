"""CMMD: ``CMMD/<ID1>/<date>-NA-<n>/1.000000-NA-<n>/1-1.dcm`` and one clinical row per breast with a finding.

File names say neither the side nor the view: both come from each header (``ImageLaterality`` and
``ViewCodeSequence``), read in parallel without pixels. A breast with no clinical row is normal
(not biopsy-verified); the clinical sheet's ``classification`` labels the others.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..errors import UserError
from .common import (
    Imported,
    find_all,
    find_one,
    parallel_map,
    require_columns,
    strip_cells,
)

LABELS = {"malignant": "cancer = the breast's clinical row says Malignant; Benign rows and imaged breasts "
                       "without a row are 0 (those are normal, not biopsy-verified)"}
PATIENT = re.compile(r"^D\d-\d+$", re.IGNORECASE)
SHEETS = ["CMMD_clinicaldata_revision.xlsx", "CMMD_clinicaldata_revision.csv", "CMMD_clinicaldata.xlsx"]
VIEWS = {"cranio-caudal": "CC", "medio-lateral oblique": "MLO", "medio-lateral": "ML", "latero-medial": "LM",
         "cranio-caudal exaggerated laterally": "XCCL", "cc": "CC", "mlo": "MLO"}


def _side_view(path: str):
    """(laterality, view) from the header, or the reason they are not there."""
    from ..dicom import DicomReadError
    from ..dicom.dataset import open_dataset

    try:
        ds = open_dataset(path, stop_before_pixels=True)
    except DicomReadError as exc:
        return exc.reason
    side = str(ds.get("ImageLaterality") or ds.get("Laterality") or "").strip().upper()[:1]
    view = ""
    seq = ds.get("ViewCodeSequence")
    if seq:
        view = VIEWS.get(str(seq[0].get("CodeMeaning", "")).strip().lower(), "")
    view = view or VIEWS.get(str(ds.get("ViewPosition") or "").strip().lower(), str(ds.get("ViewPosition") or ""))
    if side not in ("L", "R"):
        return "no ImageLaterality (or Laterality) L/R in the header"
    if not view:
        return "no view in ViewCodeSequence or ViewPosition"
    return side, view.upper()


def _clinical(src: Path) -> tuple[pd.DataFrame, Path]:
    path = find_one(src, SHEETS, "CMMD's clinical sheet")
    try:
        df = pd.read_excel(path, dtype=str) if path.suffix.lower() == ".xlsx" else pd.read_csv(path, dtype=str)
    except ImportError as exc:
        raise UserError(f"{path}: reading .xlsx needs openpyxl ({exc}); pip install openpyxl") from None
    df = strip_cells(df)
    require_columns(df, {"ID1", "LeftRight", "classification"}, path)
    return df, path


def load(src: Path, label: str, jobs: int = -1, progress: bool = True) -> Imported:
    clinical, sheet = _clinical(src)
    imp = Imported(rows=[], label=LABELS[label] + "; age from the clinical sheet; no BI-RADS or density")
    files = []
    for p in find_all(src, lambda p: p.suffix.lower() == ".dcm"):
        patient = next((part for part in p.relative_to(src).parts[:-1] if PATIENT.match(part)), None)
        if patient is None:
            imp.skip(p, "not below a patient folder named like D1-0001")
        else:
            files.append((patient, p))
    if not files:
        raise UserError(f"{src}: expected DICOM files in CMMD/<ID1>/.../1-1.dcm (ID1 like D1-0001) below this folder")
    found = parallel_map(_side_view, [p for _, p in files], jobs, "headers", progress)
    labels = {(r.ID1, str(r.LeftRight).upper()[:1]): str(r.classification).strip().lower()
              for r in clinical.itertuples()}
    ages = clinical.groupby("ID1").Age.first() if "Age" in clinical else pd.Series(dtype=str)
    seen = {}
    for (patient, path), result in zip(files, found):
        if isinstance(result, str):
            imp.skip(path, result)
            continue
        side, view = result
        base = f"{patient}_{path.stem}"
        seen[base] = seen.get(base, 0) + 1
        image_id = base if seen[base] == 1 else f"{base}_{seen[base]}"
        finding = labels.get((patient, side), "")
        imp.rows.append({
            "site_id": "", "patient_id": patient, "image_id": image_id, "laterality": side, "view": view,
            "age": pd.to_numeric(ages.get(patient), errors="coerce"), "cancer": int(finding == "malignant"),
            "biopsy": int(bool(finding)), "invasive": pd.NA, "BIRADS": pd.NA, "implant": 0, "density": "",
            "machine_id": None, "difficult_negative_case": pd.NA, "official_split": "", "src": path})
    imaged = {(r["patient_id"], r["laterality"]) for r in imp.rows}
    without_row = len(imaged - set(labels))
    not_imaged = sorted(set(labels) - imaged)
    imp.notes.append(f"{sheet.name}: {len(labels)} breast rows; {without_row} imaged breasts without a row "
                     f"(labelled normal)" + (f"; {len(not_imaged)} rows without images, e.g. {not_imaged[:3]}"
                                             if not_imaged else ""))
    return imp

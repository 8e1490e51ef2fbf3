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
    UNREADABLE_LABEL,
    Imported,
    find_all,
    find_one,
    parallel_map,
    require_columns,
    strip_cells,
)
from .headers import header_facts

LABELS = {"malignant": "cancer = the breast's clinical row says Malignant; Benign rows and imaged breasts "
                       "without a row are 0 (those are normal, not biopsy-verified)"}
PATIENT = re.compile(r"^D\d-\d+$", re.IGNORECASE)
SHEETS = ["CMMD_clinicaldata_revision.xlsx", "CMMD_clinicaldata_revision.csv", "CMMD_clinicaldata.xlsx"]
CLINICAL_COLUMNS = {"ID1", "LeftRight", "classification"}
VIEWS = {"cranio-caudal": "CC", "medio-lateral oblique": "MLO", "medio-lateral": "ML", "latero-medial": "LM",
         "cranio-caudal exaggerated laterally": "XCCL", "cc": "CC", "mlo": "MLO"}


def _side_view(facts):
    """(laterality, view) from a file's header facts (:func:`~.headers.header_facts`), or the reason they
    are not there (or the file's own problem)."""
    if isinstance(facts, str):
        return facts
    view = VIEWS.get(facts["view_meaning"], "") or VIEWS.get(facts["view_position"].lower(), facts["view_position"])
    if facts["laterality"] not in ("L", "R"):
        return "no ImageLaterality (or Laterality) L/R in the header"
    if not view:
        return "no view in ViewCodeSequence or ViewPosition"
    return facts["laterality"], view.upper()


def _clinical(src: Path, notes: list) -> tuple[pd.DataFrame, Path]:
    """The clinical sheet: the workbook, or (when it cannot be read, as happens with
    ``pd.read_excel``) a CSV export of it found anywhere below ``src``."""
    path = find_one(src, SHEETS, "CMMD's clinical sheet")
    if path.suffix.lower() == ".csv":
        return _sheet_csv(path), path
    try:
        df = strip_cells(pd.read_excel(path, dtype=str))
        require_columns(df, CLINICAL_COLUMNS, path)
        return df, path
    except ImportError as exc:
        why = f"reading .xlsx needs openpyxl ({exc})"
    except UserError as exc:
        why = str(exc).removeprefix(f"{path}: ")
    except Exception as exc:  # noqa: BLE001 - a corrupt workbook fails in many ways (zip, XML, styles)
        why = f"{type(exc).__name__}: {exc}".strip()
    export = next((p for p in find_all(src, lambda p: p.suffix.lower() == ".csv") if _has_columns(p)), None)
    if export is None:
        raise UserError(f"{path}: cannot be read as a workbook ({why}); export the sheet as CSV (columns "
                        f"{', '.join(sorted(CLINICAL_COLUMNS))}) and put the .csv anywhere below {src}")
    notes.append(f"{path.name} cannot be read ({why}): used its CSV export {export}")
    return _sheet_csv(export), export


def _sheet_csv(path: Path) -> pd.DataFrame:
    try:
        df = strip_cells(pd.read_csv(path, dtype=str, sep=None, engine="python", encoding_errors="replace"))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable CSV ({exc})") from None
    require_columns(df, CLINICAL_COLUMNS, path)
    return df


def _has_columns(path: Path) -> bool:
    """True for a CSV whose header has the clinical sheet's columns (a CSV export of the workbook)."""
    try:
        header = pd.read_csv(path, nrows=0, sep=None, engine="python", encoding_errors="replace").columns
    except Exception:  # noqa: BLE001 - any unreadable CSV is simply not the export
        return False
    return CLINICAL_COLUMNS <= {str(c).strip() for c in header}


RANK = {"benign": 0, "unreadable": 1, "malignant": 2}  # what a breast's rows add up to: the highest


def _breast_labels(clinical: pd.DataFrame, sheet: Path, imp: Imported) -> dict:
    """``{(ID1, side): benign, malignant or unreadable}``. A breast whose rows disagree is Malignant when any
    row says so (a repeated row must never turn a cancer into a benign breast); the disagreement is noted.
    A row that is neither Benign nor Malignant is skipped by name, and its breast is unreadable unless
    another row says Malignant; so are both breasts of a row whose side is not L or R (unless it says Benign)."""
    labels, disagree = {}, []
    for i, r in zip(clinical.index, clinical.itertuples()):
        side = r.LeftRight.upper()[:1] if isinstance(r.LeftRight, str) else ""
        said = r.classification.lower() if isinstance(r.classification, str) else ""
        if side not in ("L", "R"):
            imp.skip_row(sheet, i + 2, "LeftRight", r.LeftRight if isinstance(r.LeftRight, str) else "",
                         "LeftRight is not L or R: which breast the row describes is unknown" +
                         ("" if said == "benign" else f"; {UNREADABLE_LABEL} (both breasts' images, unless "
                                                      f"another row says Malignant)"))
            for key in ((r.ID1, "L"), (r.ID1, "R")) if said != "benign" else ():
                if RANK["unreadable"] > RANK.get(labels.get(key), -1):
                    labels[key] = "unreadable"
            continue
        key = (r.ID1, side)
        if said not in RANK or said == "unreadable":
            imp.skip_row(sheet, i + 2, "classification", r.classification if isinstance(r.classification, str) else "",
                         f"classification is neither Benign nor Malignant: {UNREADABLE_LABEL} (the breast's "
                         f"images too, unless another row says Malignant)")
            said = "unreadable"
        elif labels.get(key, said) not in (said, "unreadable"):
            disagree.append(key)
        if RANK[said] > RANK.get(labels.get(key), -1):
            labels[key] = said
    if disagree:
        imp.notes.append(f"{sheet.name}: {len(set(disagree))} breast(s) whose rows disagree, e.g. {disagree[0]}: "
                         f"Malignant when any row says so")
    return labels


def load(src: Path, label: str, jobs: int = -1, progress: bool = True) -> Imported:
    imp = Imported(rows=[], label=LABELS[label] + "; age from the clinical sheet; no BI-RADS or density")
    clinical, sheet = _clinical(src, imp.notes)
    files = []
    for p in find_all(src, lambda p: p.suffix.lower() == ".dcm"):
        patient = next((part for part in p.relative_to(src).parts[:-1] if PATIENT.match(part)), None)
        if patient is None:
            imp.skip(p, "not below a patient folder named like D1-0001")
        else:
            files.append((patient, p))
    if not files:
        raise UserError(f"{src}: expected DICOM files in CMMD/<ID1>/.../1-1.dcm (ID1 like D1-0001) below this folder")
    facts = parallel_map(header_facts, [p for _, p in files], jobs, "headers", progress)
    labels = _breast_labels(clinical, sheet, imp)
    ages = clinical.groupby("ID1").Age.first() if "Age" in clinical else pd.Series(dtype=str)
    seen = {}
    for (patient, path), fact in zip(files, facts):
        result = _side_view(fact)
        if isinstance(result, str):
            imp.skip(path, result)
            continue
        side, view = result
        base = f"{patient}_{path.stem}"
        seen[base] = seen.get(base, 0) + 1
        image_id = base if seen[base] == 1 else f"{base}_{seen[base]}"
        finding = labels.get((patient, side), "")
        if finding == "unreadable":
            imp.skip(path, f"{sheet.name}: the classification of {patient} {side} cannot be read: {UNREADABLE_LABEL}")
            continue
        imp.rows.append({
            "site_id": "", "patient_id": patient, "image_id": image_id, "laterality": side, "view": view,
            "age": pd.to_numeric(ages.get(patient), errors="coerce"), "cancer": int(finding == "malignant"),
            "biopsy": int(bool(finding)), "invasive": pd.NA, "BIRADS": pd.NA, "implant": 0, "density": "",
            "machine_id": None, "difficult_negative_case": pd.NA, "official_split": "", "src": path, "facts": fact})
    imaged = {(r["patient_id"], r["laterality"]) for r in imp.rows}
    read = {k for k, v in labels.items() if v != "unreadable"}  # the unreadable ones are in import.json's skipped
    without_row = len(imaged - set(labels))
    not_imaged = sorted(read - imaged)
    imp.notes.append(f"{sheet.name}: {len(read)} breast rows with a label; {without_row} imaged breasts without a row "
                     f"(labelled normal)" + (f"; {len(not_imaged)} rows without images, e.g. {not_imaged[:3]}"
                                             if not_imaged else ""))
    return imp

"""VinDr-Mammo: ``images/<study_id>/<image_id>.dicom`` with breast- and finding-level CSVs.

The study is the patient (the dataset has no patient id). Labels come from the breast-level BI-RADS
already on every image row; boxes from ``finding_annotations.csv``, clamped to the image
(``breast-level_annotations.csv`` has each image's height and width). Headers are read in parallel,
no pixel decoded, to check that each file is whole (a truncated copy is skipped) and to find
duplicates (:mod:`.duplicates`).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd

from ..errors import UserError
from .common import (
    BIRADS_NOTE,
    DENSITY_LETTERS,
    RSNA_BIRADS,
    UNREADABLE_LABEL,
    Imported,
    age_years,
    clean_box,
    find_one,
    find_optional,
    parallel_map,
    read_source_csv,
    require_columns,
    unsafe_ids,
)
from .headers import header_facts

LABELS = {
    "birads5": "cancer = breast BI-RADS 5 (the RSNA 1st place's mapping)",
    "birads45": "cancer = breast BI-RADS 4 or 5 (suspicious or highly suggestive)",
}
SPLITS = {"training": "train", "test": "test"}


def _number(text) -> str:
    """``"BI-RADS 4"`` -> ``"4"``, ``"DENSITY C"`` -> ``"C"``."""
    return str(text).strip().split()[-1].upper() if isinstance(text, str) and text.strip() else ""


def _categories(text) -> str:
    try:
        value = ast.literal_eval(text) if isinstance(text, str) and text.startswith("[") else text
    except (ValueError, SyntaxError):
        value = text
    return ";".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value or "")


def _metadata(path: Path | None, image_ids: set, notes: list) -> pd.DataFrame:
    """Age and machine per image from ``metadata.csv``, keyed by whichever column holds the image ids."""
    if path is None:
        notes.append("metadata.csv not found: age and machine_id left empty")
        return pd.DataFrame(columns=["image_id", "age", "machine_id"])
    meta = read_source_csv(path)
    key = max(meta.columns, key=lambda c: len(image_ids & set(meta[c].dropna())))
    if not image_ids & set(meta[key].dropna()):
        notes.append(f"{path}: no column holds the image ids; age and machine_id left empty")
        return pd.DataFrame(columns=["image_id", "age", "machine_id"])
    age = next((c for c in meta.columns if "age" in c.lower() and "image" not in c.lower()), None)
    model = next((c for c in meta.columns if "model" in c.lower()), None) or \
        next((c for c in meta.columns if "manufacturer" in c.lower()), None)
    notes.append(f"{path.name}: image ids in {key!r}, age from {age!r}, machine_id from {model!r}")
    return pd.DataFrame({"image_id": meta[key],
                         "age": meta[age].map(age_years) if age else None,
                         "machine_id": meta[model] if model else None}).drop_duplicates("image_id")


def _usable_rows(breasts: pd.DataFrame, path: Path, imp: Imported) -> pd.DataFrame:
    """The rows whose ids can name files, whose side is L or R, whose view is given and whose BI-RADS reads,
    each image once (a repeated row is skipped, naming both rows)."""
    bad = unsafe_ids(breasts, ["study_id", "image_id"], path, imp)
    side = breasts.laterality.fillna("").str.upper().str[:1]
    view = breasts.view_position.fillna("").str.upper()
    for i in breasts.index[~bad & ~side.isin(["L", "R"])]:
        imp.skip_row(path, i + 2, "laterality", breasts.laterality.fillna("")[i], "laterality is not L or R")
    for i in breasts.index[~bad & side.isin(["L", "R"]) & view.eq("")]:
        imp.skip_row(path, i + 2, "view_position", "", "view_position is empty")
    ok = breasts[~bad & side.isin(["L", "R"]) & view.ne("")].assign(laterality=side, view_position=view)
    first = ok.drop_duplicates("image_id").reset_index().set_index("image_id")["index"]
    repeated = ok.image_id.duplicated()
    for i in ok.index[repeated]:
        imp.skip_row(path, i + 2, "image_id", ok.at[i, "image_id"],
                     f"repeats row {first[ok.at[i, 'image_id']] + 2}'s image; the first row is kept")
    ok = ok[~repeated]
    unread = ~ok.breast_birads.map(_number).isin(RSNA_BIRADS)  # the first row's label, or none: never a later row's
    for i in ok.index[unread]:
        imp.skip_row(path, i + 2, "breast_birads", ok.breast_birads.fillna("")[i],
                     f"breast_birads is not a BI-RADS category (like 'BI-RADS 4'): {UNREADABLE_LABEL}")
    ok = ok[~unread]
    if ok.empty:
        raise UserError(f"{path}: no row with usable study_id and image_id ({len(breasts)} rows; see import.json)")
    return ok


def load(src: Path, label: str, jobs: int = -1, progress: bool = True) -> Imported:
    breast_csv = find_one(src, "breast-level_annotations.csv", "VinDr-Mammo's breast-level_annotations.csv")
    root = breast_csv.parent
    imp = Imported(rows=[], label=LABELS[label] + "; " + BIRADS_NOTE + "; density 'DENSITY A'-'D' -> A-D")
    breasts = read_source_csv(breast_csv)
    need = {"study_id", "image_id", "laterality", "view_position", "breast_birads", "split"}
    require_columns(breasts, need, breast_csv)
    breasts = _usable_rows(breasts, breast_csv, imp)
    images_dir = root / "images"
    if not images_dir.is_dir():
        found = find_optional(src, [f"{breasts.image_id.iloc[0]}.dicom", f"{breasts.image_id.iloc[0]}.dcm"])
        images_dir = found.parent.parent if found else images_dir
        imp.notes.append(f"images found under {images_dir}")
    meta = _metadata(find_optional(src, "metadata.csv"), set(breasts.image_id), imp.notes).set_index("image_id")
    ages, machines = meta.age.to_dict(), meta.machine_id.to_dict()
    malignant = {"5"} if label == "birads5" else {"4", "5"}
    found = []
    for r in breasts.itertuples():
        path = next((p for p in (images_dir / r.study_id / f"{r.image_id}.dicom",
                                 images_dir / r.study_id / f"{r.image_id}.dcm") if p.exists()), None)
        if path is None:
            imp.skip(images_dir / r.study_id / f"{r.image_id}.dicom", "file not found")
        else:
            found.append((r, path))
    facts = parallel_map(header_facts, [p for _, p in found], jobs, "headers", progress)
    for (r, path), fact in zip(found, facts):
        if isinstance(fact, str):
            imp.skip(path, fact)
            continue
        birads = _number(r.breast_birads)
        imp.rows.append({
            "site_id": "", "patient_id": r.study_id, "image_id": r.image_id, "laterality": r.laterality,
            "view": r.view_position, "age": ages.get(r.image_id),
            "cancer": int(birads in malignant), "biopsy": pd.NA, "invasive": pd.NA,
            "BIRADS": RSNA_BIRADS.get(birads, pd.NA), "implant": 0,
            "density": DENSITY_LETTERS.get(_number(getattr(r, "breast_density", "")), ""),
            "machine_id": machines.get(r.image_id),
            "difficult_negative_case": pd.NA, "official_split": SPLITS.get(str(r.split).lower(), ""), "src": path,
            "facts": fact})
    findings_csv = find_optional(src, "finding_annotations.csv")
    if findings_csv is None:
        imp.notes.append("finding_annotations.csv not found: lesions.csv is empty")
        return imp
    findings = read_source_csv(findings_csv)
    require_columns(findings, {"image_id", "xmin", "ymin", "xmax", "ymax"}, findings_csv)
    size = breasts.set_index("image_id")[["height", "width"]].apply(pd.to_numeric, errors="coerce") \
        if {"height", "width"} <= set(breasts.columns) else None
    corners = ["xmin", "ymin", "xmax", "ymax"]
    findings[corners] = findings[corners].apply(pd.to_numeric, errors="coerce")
    boxed = findings.dropna(subset=corners)
    repeated = int(boxed.duplicated().sum())
    boxed = boxed.drop_duplicates()
    if repeated:
        imp.notes.append(f"{findings_csv.name}: {repeated} repeated row(s) dropped")
    for r in boxed.itertuples():
        h, w = size.loc[r.image_id] if size is not None and r.image_id in size.index else (None, None)
        box = clean_box(imp, r.xmin, r.ymin, r.xmax, r.ymax, w, h)
        if box is None:
            continue
        imp.lesions.append({"image_id": r.image_id, "x0": round(box[0], 1), "y0": round(box[1], 1),
                            "x1": round(box[2], 1), "y1": round(box[3], 1),
                            "finding": _categories(getattr(r, "finding_categories", "")),
                            "pathology": ""})
    imp.notes.append(f"{len(boxed)} finding boxes, {imp.box_fixes['clamped']} clamped to the image"
                     + "".join(f", {n} {k.replace('_', ' ')}" for k, n in sorted(imp.box_fixes.items()) if k != "clamped"))
    return imp


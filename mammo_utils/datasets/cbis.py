"""CBIS-DDSM: four case-description CSVs (mass/calc x train/test) and NBIA's folder tree of DICOMs.

The CSVs' file paths do not match the disk, so files are found by their per-view folder
(``Mass-Training_P_00001_LEFT_CC``) or, when NBIA's ``metadata.csv`` is there, by series UID. Each
abnormality folder (``..._LEFT_CC_1``) holds the ROI mask and the cropped lesion, their CSV columns
sometimes swapped: the mask is the file with the full image's shape, whatever its column says.
Headers are read (in parallel, no pixel decoded) to tell them apart, to check that each file is whole
and to find duplicates (the same mammogram under a ``Mass-`` and a ``Calc-`` folder is imported once,
its lesions merged); mask pixels only for their boxes.
"""
from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from .common import (
    BIRADS_NOTE,
    DENSITY_LETTERS,
    RSNA_BIRADS,
    UNREADABLE_LABEL,
    Imported,
    find_all,
    find_optional,
    parallel_map,
    read_source_csv,
    require_columns,
    unsafe_ids,
)
from .headers import header_facts

LABELS = {"malignant": "cancer = pathology MALIGNANT; BENIGN and BENIGN_WITHOUT_CALLBACK are benign"}
PATHOLOGIES = {"MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK"}
CSV_NAME = re.compile(r"^(mass|calc)_case_description_(train|test)_set\.csv$", re.IGNORECASE)
FOLDER = re.compile(r"^(Mass|Calc)-(Training|Test)_(P_\d+)_(LEFT|RIGHT)_(CC|MLO)(?:_(\d+))?$", re.IGNORECASE)


def _mask_box(path: str):
    """(x0, y0, x1, y1) of a mask's nonzero pixels (x the column, end exclusive), or the reason there is none."""
    from ..dicom import DicomReadError
    from ..dicom.read import read_stored

    try:
        arr = read_stored(path)[0]
    except DicomReadError as exc:
        return exc.reason
    ys, xs = np.nonzero(arr)
    if not len(ys):
        return "the ROI mask is empty"
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _image_id(folder: str) -> str:
    """``MASS-TRAINING_P_00001_LEFT_CC`` -> ``Mass-Training_P_00001_LEFT_CC``, the folder as CBIS spells it."""
    kind, split, patient, side, view, _ = FOLDER.match(folder).groups()
    return f"{kind.title()}-{split.title()}_{patient.upper()}_{side.upper()}_{view.upper()}"


def _folders(src: Path) -> dict[str, list[Path]]:
    """DICOM files below ``src`` by the per-view or per-abnormality folder they sit in."""
    out = defaultdict(list)
    for p in find_all(src, lambda p: p.suffix.lower() == ".dcm"):
        for part in p.relative_to(src).parts[:-1]:
            if FOLDER.match(part):
                out[part.upper()].append(p)
                break
    return out


def _by_series(src: Path) -> dict[str, list[Path]]:
    """Series UID -> DICOM files, from NBIA's metadata.csv when it is there."""
    meta_csv = find_optional(src, "metadata.csv")
    if meta_csv is None:
        return {}
    meta = read_source_csv(meta_csv)
    if not {"Series UID", "File Location"} <= set(meta.columns):
        return {}
    out, root = {}, os.path.abspath(src)
    for uid, loc in zip(meta["Series UID"], meta["File Location"]):
        folder = Path(os.path.normpath(meta_csv.parent.absolute() / str(loc).replace("\\", "/")))
        if os.path.commonpath([root, str(folder)]) != root:
            continue  # a cell is data, never a path out of the dataset
        if folder.is_dir():
            out[uid] = sorted(folder.glob("*.dcm"))
    return out


def _read_descriptions(src: Path) -> pd.DataFrame:
    csvs = find_all(src, lambda p: bool(CSV_NAME.match(p.name)))
    if not csvs:
        raise UserError(f"{src}: expected CBIS-DDSM's mass_case_description_train_set.csv (and the calc and test "
                        f"ones) somewhere below this folder")
    parts = []
    for path in csvs:
        kind, split = CSV_NAME.match(path.name).groups()
        df = read_source_csv(path)
        df.columns = [c.lower().replace(" ", "_") for c in df.columns]  # 'breast density' in the calc files
        require_columns(df, {"patient_id", "left_or_right_breast", "image_view", "abnormality_id", "pathology",
                             "image_file_path"}, path)
        parts.append(df.assign(kind=kind.lower(), split=split.lower(), csv=path.name, csv_path=str(path),
                               row=df.index + 2))
    return pd.concat(parts, ignore_index=True)


def load(src: Path, label: str, jobs: int = -1, progress: bool = True) -> Imported:
    rows = _read_descriptions(src)
    imp = Imported(rows=[], label=LABELS[label] + "; " + BIRADS_NOTE + " (from the highest 'assessment'); "
                   "breast_density 1-4 -> A-D; biopsy = 1 (every abnormality is pathology-verified)")
    rows["key"] = rows.image_file_path.map(lambda p: str(p).replace("\\", "/").split("/")[0].upper())
    bad = ~rows.key.map(lambda k: bool(FOLDER.match(k)))
    for r in rows[bad].itertuples():
        imp.skip_row(r.csv_path, r.row, "image file path", "" if pd.isna(r.image_file_path) else r.image_file_path,
                     "image file path does not start with a per-view folder name (like Mass-Training_P_00001_LEFT_CC)")
    rows = rows[~bad]
    rows = rows[~unsafe_ids(rows, ["patient_id"], rows.csv_path, imp, rows.row)]
    folders, series = _folders(src), _by_series(src)
    if series:
        imp.notes.append(f"NBIA metadata.csv found: files joined by series UID ({len(series)} series)")

    def candidates(path_cell: str, folder: str) -> list[Path]:
        parts = str(path_cell).replace("\\", "/").split("/")
        if len(parts) >= 3 and parts[2] in series:
            return series[parts[2]]
        return folders.get(folder.upper(), [])

    full = {}
    for key, group in rows.groupby("key", sort=True):
        files = candidates(group.image_file_path.iloc[0], key)
        if not files:
            imp.skip(group.image_file_path.iloc[0], f"no DICOM file in a folder named {key} below {src}")
            continue
        if len(files) > 1:
            named = [f for f in files if "full mammogram" in str(f).lower()]
            imp.notes.append(f"{key}: {len(files)} files in the view folder; took {(named or files)[0].name}")
            files = named or files
        full[key] = files[0]
    abnormal = {}
    for r in rows[rows.key.isin(full)].itertuples():
        folder = f"{r.key}_{r.abnormality_id}"
        files = {str(f) for c in ("cropped_image_file_path", "roi_mask_file_path") if hasattr(r, c)
                 for f in candidates(getattr(r, c), folder)} | {str(f) for f in folders.get(folder.upper(), [])}
        abnormal[r.Index] = sorted(files)
    to_read = sorted(set(map(str, full.values())) | {f for fs in abnormal.values() for f in fs})
    facts = dict(zip(to_read, parallel_map(header_facts, to_read, jobs, "headers", progress)))
    shapes = {f: v if isinstance(v, str) else (v["rows"], v["columns"]) for f, v in facts.items()}
    for f in sorted(set(to_read) - set(map(str, full.values()))):
        if isinstance(shapes[f], str):  # a mask or crop that cannot be read (a full image is skipped below)
            imp.skip(f, shapes[f])
    masks, rescale = {}, {}
    for i, files in abnormal.items():
        r = rows.loc[i]
        want = shapes[str(full[r.key])]
        if isinstance(want, str):
            continue
        same = [f for f in files if shapes.get(f) == want]
        sized = [f for f in files if isinstance(shapes.get(f), tuple)]
        largest = max(sized, key=lambda f: shapes[f][0] * shapes[f][1], default=None)
        if same:
            masks[i] = same[0]
        elif largest and shapes[largest][0] * shapes[largest][1] >= 0.5 * want[0] * want[1]:
            masks[i] = largest  # a few masks differ from their image by some rows: the box is rescaled
            rescale[i] = (want[0] / shapes[largest][0], want[1] / shapes[largest][1])
        elif files:
            imp.notes.append(f"{r.key}_{r.abnormality_id}: no file near the full image's shape; no mask box")
    if rescale:
        imp.notes.append(f"{len(rescale)} ROI mask(s) differ in shape from their image: boxes rescaled, e.g. "
                         f"{rows.loc[next(iter(rescale))].key}")
    boxes = dict(zip(sorted(set(masks.values())),
                     parallel_map(_mask_box, sorted(set(masks.values())), jobs, "ROI masks", progress)))
    pathology = rows.pathology.fillna("").str.upper()
    rows = rows.assign(malignant=pathology.eq("MALIGNANT"), unread=~pathology.isin(PATHOLOGIES))
    density_col = "breast_density" if "breast_density" in rows else None
    disagree = 0
    for key, group in rows[rows.key.isin(full)].groupby("key", sort=True):
        path = full[key]
        if isinstance(shapes[str(path)], str):
            imp.skip(path, shapes[str(path)])
            continue
        if group.unread.any() and not group.malignant.any():  # a benign row beside an unreadable one: unknown
            r = group[group.unread].iloc[0]
            imp.skip_row(r.csv_path, r.row, "pathology", "" if pd.isna(r.pathology) else r.pathology,
                         f"pathology is not MALIGNANT, BENIGN or BENIGN_WITHOUT_CALLBACK: {UNREADABLE_LABEL} "
                         f"(image {path.name} of {_image_id(key)})")
            continue
        first = group.iloc[0]
        _, _, _, side, view, _ = FOLDER.match(key).groups()  # the folder names the breast and view; cells may be empty
        said = {(str(c).upper()[:1], str(v).upper()) for c, v in zip(group.left_or_right_breast, group.image_view)}
        disagree += said != {(side[0].upper(), view.upper())}
        assessment = pd.to_numeric(group["assessment"], errors="coerce").max() if "assessment" in group else None
        birads = RSNA_BIRADS.get(str(int(assessment)), pd.NA) if pd.notna(assessment) else pd.NA
        imp.rows.append({
            "site_id": "", "patient_id": first.patient_id, "image_id": _image_id(key),
            "laterality": side[0].upper(), "view": view.upper(), "age": None,
            "cancer": int(group.malignant.any()), "biopsy": 1, "invasive": pd.NA,
            "BIRADS": birads, "implant": 0,
            "density": DENSITY_LETTERS.get(str(first[density_col]).split(".")[0], "") if density_col else "",
            "machine_id": None, "difficult_negative_case": pd.NA,
            "official_split": "train" if first.split == "train" else "test", "src": path,
            "facts": facts[str(path)]})
        image_id = imp.rows[-1]["image_id"]
        for i, r in group.iterrows():
            box = boxes.get(masks.get(i))
            if isinstance(box, tuple) and i in rescale:
                sy, sx = rescale[i]
                box = (round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy))
            if isinstance(box, tuple):
                imp.lesions.append({"image_id": image_id, "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3],
                                    "finding": r.get("abnormality_type", r.kind),
                                    "pathology": str(r.pathology).upper()})
            elif isinstance(box, str):
                imp.skip(masks[i], box)
    if disagree:
        imp.notes.append(f"{disagree} image(s) whose 'left or right breast' or 'image view' cells are empty or disagree "
                         f"with the folder name (the folder name was used)")
    n_abn = int(rows.key.isin(full).sum())
    imp.notes.append(f"{n_abn} abnormalities on {len(full)} images; {len(masks)} ROI masks found by shape "
                     f"(the mask is the file of the full image's shape, whichever CSV column names it)")
    return imp

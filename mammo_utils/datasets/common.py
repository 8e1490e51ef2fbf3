"""What every importer shares: finding files below the source, linking images, writing the RSNA layout.

An importer turns a dataset as downloaded into an :class:`Imported`: one row per image in the RSNA
columns (plus ``source``, ``official_split`` and ``src``, the file the image comes from), lesion boxes
in stored-image pixels, the files it skipped and why, and what it found that a user should know.
:func:`write_import` then lays out ``DST`` and never writes below the source folder.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import paths
from ..errors import UserError

TRAIN_COLUMNS = ["site_id", "patient_id", "image_id", "laterality", "view", "age", "cancer", "biopsy", "invasive",
                 "BIRADS", "implant", "density", "machine_id", "difficult_negative_case", "source", "official_split"]
LESION_COLUMNS = ["image_id", "x0", "y0", "x1", "y1", "finding", "pathology"]
IMPORT_JSON = "import.json"
LESIONS_CSV = "lesions.csv"
DENSITY_LETTERS = {"1": "A", "2": "B", "3": "C", "4": "D", "A": "A", "B": "B", "C": "C", "D": "D"}
# RSNA's BIRADS column is a screening outcome, not the BI-RADS scale: 0 = recalled, 1 = negative,
# 2 = benign. A diagnostic BI-RADS 3 or above would have been recalled.
RSNA_BIRADS = {"0": 0, "1": 1, "2": 2, "3": 0, "4": 0, "4A": 0, "4B": 0, "4C": 0, "5": 0, "6": 0}
BIRADS_NOTE = "BIRADS: standard 1 -> 1, 2 -> 2, 0 and 3-6 -> 0 (RSNA's 'recalled')"


@dataclass
class Imported:
    """An importer's result, before anything is written."""

    rows: list[dict]
    lesions: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)     # {"file", "reason"}
    notes: list[str] = field(default_factory=list)        # what the importer found, in plain words
    label: str = ""                                       # the label mapping used, in words
    written: bool = False                                 # rows' images are files the importer wrote (not links)

    def skip(self, file, reason: str) -> None:
        self.skipped.append({"file": str(file), "reason": reason})


def find_one(src: Path, names, what: str) -> Path:
    """The shallowest file below ``src`` whose name is one of ``names`` (case-insensitive); else one
    UserError saying what was expected and where."""
    wanted = {n.lower() for n in ([names] if isinstance(names, str) else names)}
    found = find_all(src, lambda p: p.name.lower() in wanted)
    if not found:
        raise UserError(f"{src}: expected {what} ({' or '.join(sorted(wanted))}) somewhere below this folder; "
                        f"is this the dataset as downloaded and unpacked?")
    return min(found, key=lambda p: (len(p.parts), str(p)))


def find_optional(src: Path, names) -> Path | None:
    try:
        return find_one(src, names, "")
    except UserError:
        return None


def find_all(src: Path, keep) -> list[Path]:
    """Every file below ``src`` (symlinks followed) for which ``keep(path)`` is true, in sorted order."""
    out = []
    for root, dirs, files in os.walk(src, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            p = Path(root) / name
            if keep(p):
                out.append(p)
    return out


def strip_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Column names and text cells without surrounding whitespace (several datasets pad them)."""
    df = df.rename(columns=lambda c: str(c).strip())
    for c in df.columns:
        if not pd.api.types.is_numeric_dtype(df[c]):
            df[c] = df[c].map(lambda v: v.strip() if isinstance(v, str) else v)
    return df


def require_columns(df: pd.DataFrame, need, path) -> None:
    missing = sorted(set(need) - set(df.columns))
    if missing:
        raise UserError(f"{path}: expected column(s) {missing}; found {list(df.columns)}")


def is_dicom(path: Path) -> str | None:
    """None when ``path`` looks like a DICOM file (the 'DICM' magic, or a header pydicom reads), else why not."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except FileNotFoundError:
        return "file not found"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if len(head) == 132 and head[128:] == b"DICM":
        return None
    from ..dicom import DicomReadError
    from ..dicom.dataset import open_dataset

    try:
        open_dataset(path, stop_before_pixels=True)
        return None
    except DicomReadError as exc:
        return exc.reason


def parallel_map(fn, items, jobs: int, desc: str, progress: bool = True) -> list:
    """``[fn(str(item)) ...]`` over worker processes, in order, with a progress bar (header reads)."""
    from joblib import Parallel, delayed

    from ..parallel import resolve_jobs
    from ..progress import bar

    items = list(items)
    n = min(resolve_jobs(jobs), max(1, len(items) // 64))  # a pool is not worth starting for a few files
    return Parallel(n_jobs=n, batch_size=32)(
        delayed(fn)(str(p)) for p in bar(items, desc=desc, unit="file", disable=not progress))


def age_years(value) -> float | None:
    """Age in years from ``53``, ``"53"``, ``"053Y"`` or ``"53.0"``; None when absent or not an age."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*Y?\s*$", str(value), re.IGNORECASE)
    return float(m.group(1)) if m else None


def breast_level(df: pd.DataFrame) -> pd.DataFrame:
    """Every image of a breast takes the breast's label, as in RSNA (cancer is a property of the breast)."""
    df = df.copy()
    df["cancer"] = df.groupby(["patient_id", "laterality"]).cancer.transform("max").astype(int)
    return df


def check_destination(src: Path, out: Path) -> None:
    """Refuse a destination inside the source (the source is never written to) or the source itself."""
    src, out = Path(src).resolve(), Path(out).resolve()
    if out == src or src in out.parents:
        raise UserError(f"--out {out} is inside the source folder {src}; the source is never written to: "
                        f"choose a folder outside it")


def place(src_file: Path, dst_file: Path, copy: bool, made: set | None = None) -> None:
    """``dst_file`` as a symbolic link to ``src_file`` (or a copy); a rerun leaves a correct one alone.
    ``made``: folders already created in this run (one mkdir per patient, not per image)."""
    src_file = Path(src_file).resolve()
    if os.path.lexists(dst_file):
        if not copy and dst_file.is_symlink() and Path(os.readlink(dst_file)) == src_file:
            return
        if copy and not dst_file.is_symlink() and dst_file.stat().st_size == src_file.stat().st_size \
                and dst_file.stat().st_mtime >= src_file.stat().st_mtime:
            return
        dst_file.unlink()
    if made is None or dst_file.parent not in made:
        dst_file.parent.mkdir(parents=True, exist_ok=True)
        if made is not None:
            made.add(dst_file.parent)
    if copy:
        tmp = dst_file.with_name(dst_file.name + ".part")
        shutil.copy2(src_file, tmp)
        os.replace(tmp, dst_file)
    else:
        os.symlink(src_file, dst_file)


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Write through a temporary file, so an interrupted import never leaves half a table."""
    tmp = path.with_name(path.name + ".part")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def table_of(imp: Imported, source: str) -> pd.DataFrame:
    """The RSNA training table of an import (one row per image, breast-level labels, known columns first)."""
    df = pd.DataFrame(imp.rows)
    if df.empty:
        raise UserError(f"{source}: no image could be imported ({len(imp.skipped)} skipped; see import.json)")
    df["source"] = source
    for c in TRAIN_COLUMNS:
        if c not in df:
            df[c] = pd.NA
    dup = df.image_id.duplicated(keep=False)
    if dup.any():
        raise UserError(f"{source}: image ids repeat after import: {sorted(set(df.image_id[dup]))[:3]}")
    df = breast_level(df)
    return df[TRAIN_COLUMNS + ["src"]].sort_values(["patient_id", "laterality", "view", "image_id"],
                                                   kind="stable").reset_index(drop=True)


def write_import(imp: Imported, out: Path, source: str, copy: bool, label_name: str, src: Path,
                 progress: bool = True) -> dict:
    """Lay out ``out`` in the RSNA layout from ``imp``; returns (and writes) the ``import.json`` record."""
    from ..progress import bar

    out = Path(out)
    df = table_of(imp, source)
    out.mkdir(parents=True, exist_ok=True)
    if not imp.written:
        made = set()
        for r in bar(list(df.itertuples()), desc=f"{'copying' if copy else 'linking'} {source}", unit="file",
                     disable=not progress):
            place(Path(r.src), paths.dicom_path(out, "train", r.patient_id, r.image_id), copy, made)
    write_csv(df.drop(columns=["src"]), paths.split_csv(out, "train"))
    lesions = pd.DataFrame(imp.lesions, columns=LESION_COLUMNS)
    lesions = lesions[lesions.image_id.isin(set(df.image_id))]
    write_csv(lesions, out / LESIONS_CSV)
    breasts = df.groupby(["patient_id", "laterality"]).cancer.max()
    record = {
        "source": source, "source_folder": str(Path(src).resolve()), "label": label_name,
        "label_mapping": imp.label, "files": "copied" if copy else ("written" if imp.written else "linked"),
        "counts": {"images": len(df), "patients": int(df.patient_id.nunique()), "breasts": len(breasts),
                   "cancer_breasts": int(breasts.sum()), "cancer_images": int(df.cancer.sum()),
                   "lesion_boxes": len(lesions), "skipped": len(imp.skipped),
                   "official_split": {str(k): int(v) for k, v in df.official_split.fillna("").value_counts().items()}},
        "notes": imp.notes, "skipped": imp.skipped,
    }
    (out / IMPORT_JSON).write_text(json.dumps(record, indent=2, default=str))
    return record


def read_lesions(data) -> pd.DataFrame:
    """``<data>/lesions.csv`` (boxes in stored-image pixels), or an empty table when the dataset has none."""
    path = Path(data) / LESIONS_CSV
    if not path.exists():
        return pd.DataFrame(columns=LESION_COLUMNS)
    return pd.read_csv(path, dtype={"image_id": str, "finding": str, "pathology": str})

"""What every importer shares: finding files below the source, linking images, writing the RSNA layout.

An importer turns a dataset as downloaded into an :class:`Imported`: one row per image in the RSNA
columns (plus ``source``, ``official_split`` and ``src``, the file the image comes from), lesion boxes
in stored-image pixels, the files it skipped and why, and what it found that a user should know.
:func:`write_import` then lays out ``DST`` and never writes below the source folder.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import paths
from ..errors import UserError
from .destination import (
    IMPORT_JSON,
    Prior,
    check_free,
    check_inside,
    mark_pending,
    place,
    write_csv,
    write_json,
)

TRAIN_COLUMNS = ["site_id", "patient_id", "image_id", "laterality", "view", "age", "cancer", "biopsy", "invasive",
                 "BIRADS", "implant", "density", "machine_id", "difficult_negative_case", "source", "official_split",
                 "duplicate_group"]
LESION_COLUMNS = ["image_id", "x0", "y0", "x1", "y1", "finding", "pathology"]
LESIONS_CSV = "lesions.csv"
DENSITY_LETTERS = {"1": "A", "2": "B", "3": "C", "4": "D", "A": "A", "B": "B", "C": "C", "D": "D"}
# RSNA's BIRADS column is a screening outcome, not the BI-RADS scale: 0 = recalled, 1 = negative,
# 2 = benign. A diagnostic BI-RADS 3 or above would have been recalled.
RSNA_BIRADS = {"0": 0, "1": 1, "2": 2, "3": 0, "4": 0, "4A": 0, "4B": 0, "4C": 0, "5": 0, "6": 0}
UNREADABLE_LABEL = "a label that cannot be read is left out, never taken for a negative"
BIRADS_NOTE = "BIRADS: standard 1 -> 1, 2 -> 2, 0 and 3-6 -> 0 (RSNA's 'recalled')"


@dataclass
class Imported:
    """An importer's result, before anything is written."""

    rows: list[dict]
    lesions: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)     # {"file", "reason"}, a table row also "row", "column", "value"
    notes: list[str] = field(default_factory=list)        # what the importer found, in plain words
    label: str = ""                                       # the label mapping used, in words
    written: bool = False                                 # rows' images are files the importer wrote (not links)
    box_fixes: Counter = field(default_factory=Counter)   # lesion boxes reordered, clamped, dropped (no area)

    def skip(self, file, reason: str) -> None:
        self.skipped.append({"file": str(file), "reason": reason})

    def skip_row(self, file, row: int, column: str, value, reason: str) -> None:
        """A table row left out, named by its file, spreadsheet row number (header = 1), column and value."""
        self.skipped.append({"file": str(file), "row": int(row), "column": column, "value": str(value),
                             "reason": reason})


def unsafe_ids(df: pd.DataFrame, columns, file, imp: Imported, rows: pd.Series | None = None) -> pd.Series:
    """True for each row whose id cell cannot name a file (:func:`paths.id_problem`). Each such row is
    skipped in ``imp``, named by its file (``file``, or a Series of each row's), its row number (``rows``,
    else the index + 2 as in a spreadsheet), the column and the value."""
    bad = pd.Series(False, index=df.index)
    for col in columns:
        problems = df[col].map(paths.id_problem)
        for i in problems.index[problems.notna()]:
            if not bad[i]:
                row = rows[i] if rows is not None else i + 2
                imp.skip_row(file[i] if isinstance(file, pd.Series) else file, row, col, df.at[i, col],
                             f"{col} cannot name a file: {problems[i]}")
            bad[i] = True
    return bad


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
    """Every file below ``src`` (symlinks followed) for which ``keep(path)`` is true, in sorted order. A folder
    reached twice (a link back up the tree, or two links to one folder) is walked once: a loop would list
    each file once per turn, down to the system's limit."""
    out, seen = [], set()
    for root, dirs, files in os.walk(src, followlinks=True):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
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


def read_source_csv(path, **kw) -> pd.DataFrame:
    """A dataset's CSV with text cells, stripped (:func:`strip_cells`); an empty, binary or malformed file
    is one UserError naming it (a download cut short or a file saved by another program)."""
    try:
        return strip_cells(pd.read_csv(path, dtype=str, **kw))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable CSV ({exc}); is it the file as the dataset ships it?") from None


def require_columns(df: pd.DataFrame, need, path) -> None:
    missing = sorted(set(need) - set(df.columns))
    if missing:
        raise UserError(f"{path}: expected column(s) {missing}; found {list(df.columns)}")


def clean_box(imp: Imported, x0, y0, x1, y1, width=None, height=None) -> tuple | None:
    """A lesion box with its corners ordered and clamped to the image (``width`` x ``height`` when known), or
    None when nothing of it is left (no area); what was done is counted in ``imp.box_fixes``."""
    xa, xb = sorted((float(x0), float(x1)))
    ya, yb = sorted((float(y0), float(y1)))
    if (xa, ya) != (float(x0), float(y0)):
        imp.box_fixes["reordered"] += 1
    w = float(width) if width is not None and pd.notna(width) else float("inf")
    h = float(height) if height is not None and pd.notna(height) else float("inf")
    box = (min(max(xa, 0.0), w), min(max(ya, 0.0), h), min(max(xb, 0.0), w), min(max(yb, 0.0), h))
    if box != (xa, ya, xb, yb):
        imp.box_fixes["clamped"] += 1
    if box[2] <= box[0] or box[3] <= box[1]:
        imp.box_fixes["dropped_no_area"] += 1
        return None
    return box


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
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*Y?\s*$", str(value), re.IGNORECASE)
    return float(m.group(1)) if m else None


def breast_level(df: pd.DataFrame) -> pd.DataFrame:
    """Every image of a breast takes the breast's label, as in RSNA (cancer is a property of the breast)."""
    df = df.copy()
    df["cancer"] = df.groupby(["patient_id", "laterality"]).cancer.transform("max").astype(int)
    return df


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


def drop_unsafe_rows(imp: Imported) -> None:
    """Every importer checks the ids of its tables' rows; this catches an id one built from elsewhere, and an
    image whose file name differs from another's only by case (one file on macOS or Windows)."""
    kept, named = [], {}
    for r in imp.rows:
        problem = next(((c, p) for c in ("patient_id", "image_id") if (p := paths.id_problem(r[c]))), None)
        if problem:
            imp.skip(r["src"], f"{problem[0]} {r[problem[0]]!r} cannot name a file: {problem[1]}")
            continue
        key = (str(r["patient_id"]).casefold(), str(r["image_id"]).casefold())
        first = named.setdefault(key, (r["patient_id"], r["image_id"]))
        if first != (r["patient_id"], r["image_id"]):
            imp.skip(r["src"], f"image {r['patient_id']}/{r['image_id']} differs from {first[0]}/{first[1]} only by "
                               f"case: one file on a case-insensitive file system (macOS, Windows); the first is kept")
        else:
            kept.append(r)
    imp.rows = kept


def uid_conflict_note(conflicts: list[str]) -> str:
    return (f"{len(conflicts)} SOPInstanceUID(s) shared by images whose pixels differ, e.g. {conflicts[0]}: "
            f"not duplicates, every such image kept (an anonymiser that reused UIDs?)")


def merge_duplicates(imp: Imported) -> list[dict]:
    """Keep one image of each group of duplicates (see :mod:`.duplicates`); returns the report."""
    from .duplicates import merge_duplicates as merge
    from .duplicates import uid_conflicts

    facts = [r.pop("facts", None) or {} for r in imp.rows]
    conflicts = uid_conflicts([r["src"] for r in imp.rows], facts)
    if conflicts:
        imp.notes.append(uid_conflict_note(conflicts))
    imp.rows, imp.lesions, report = merge(imp.rows, imp.lesions, facts)
    if report:
        n = sum(len(g["dropped"]) for g in report)
        imp.notes.append(f"{n} duplicate image(s) not imported, each the same image as one kept "
                         f"(SOPInstanceUID or stored pixels; lesions merged): see 'duplicates' in import.json")
    return report


def warn_skipped_rows(imp: Imported, source: str) -> None:
    """One warning line for the table rows left out (each is named in import.json's skipped list)."""
    rows = [s for s in imp.skipped if "row" in s]
    if rows:
        first = rows[0]
        warnings.warn(f"{source}: {len(rows)} table row(s) skipped, e.g. {first['file']} row {first['row']} "
                      f"{first['column']} {first['value']!r}: {first['reason']} (all in import.json)", stacklevel=3)


def remove_stale(prior: Prior, kept: set) -> None:
    """The earlier run's images that this run no longer imports (a row gone from the source, a file now
    skipped) are removed, with a folder they leave empty: a rerun leaves what a new import would."""
    for stale in sorted(prior.files - kept):
        if prior.owns(Path(stale)):
            Path(stale).unlink()
            with contextlib.suppress(OSError):
                Path(stale).parent.rmdir()


def import_head(source: str, src: Path, files: str) -> dict:
    """What identifies an import in its ``import.json`` (a rerun of the same source may write over it)."""
    return {"source": source, "source_folder": str(Path(src).resolve()), "files": files}


def write_import(imp: Imported, out: Path, source: str, copy: bool, label_name: str, src: Path,
                 progress: bool = True, prior: Prior | None = None) -> dict:
    """Lay out ``out`` in the RSNA layout from ``imp``; returns (and writes) the ``import.json`` record.
    ``prior``: the same import's earlier output in ``out`` (the only files it may replace)."""
    from ..progress import bar

    out, prior = Path(out), prior or Prior()
    drop_unsafe_rows(imp)
    duplicates = merge_duplicates(imp)
    df = table_of(imp, source)
    out.mkdir(parents=True, exist_ok=True)
    if not imp.written:
        pairs = [(Path(s), paths.dicom_path(out, "train", p, i)) for s, p, i in zip(df.src, df.patient_id, df.image_id)]
        check_inside(out, [d for _, d in pairs])
        check_free(pairs, copy, prior)
        mark_pending(out, import_head(source, src, "copied" if copy else "linked"), [d for _, d in pairs])
        made = set()
        for src_file, dst in bar(pairs, desc=f"{'copying' if copy else 'linking'} {source}", unit="file",
                                 disable=not progress):
            place(src_file, dst, copy, made, prior)
        remove_stale(prior, {str(d) for _, d in pairs})
    else:  # a duplicate's file was written before it was found to be one: it is not part of the import
        for dropped in (d for g in duplicates for d in g["dropped"]):
            stale = paths.dicom_path(out, "train", dropped["patient_id"], dropped["image_id"])
            if stale.is_file() and not stale.is_symlink():
                stale.unlink()
        remove_stale(prior, {str(paths.dicom_path(out, "train", p, i)) for p, i in zip(df.patient_id, df.image_id)})
    write_csv(df.drop(columns=["src"]), paths.split_csv(out, "train"))
    lesions = pd.DataFrame(imp.lesions, columns=LESION_COLUMNS)
    lesions = lesions[lesions.image_id.isin(set(df.image_id))]
    write_csv(lesions, out / LESIONS_CSV)
    breasts = df.groupby(["patient_id", "laterality"]).cancer.max()
    record = {
        **import_head(source, src, "copied" if copy else ("written" if imp.written else "linked")),
        "label": label_name, "label_mapping": imp.label,
        "counts": {"images": len(df), "patients": int(df.patient_id.nunique()), "breasts": len(breasts),
                   "cancer_breasts": int(breasts.sum()), "cancer_images": int(df.cancer.sum()),
                   "lesion_boxes": len(lesions), "lesion_boxes_fixed": dict(sorted(imp.box_fixes.items())),
                   "duplicate_images_dropped": sum(len(g["dropped"]) for g in duplicates),
                   "patients_linked_by_duplicates": int(df.patient_id[df.duplicate_group.fillna("") != ""].nunique()),
                   "skipped": len(imp.skipped),
                   "official_split": {str(k): int(v) for k, v in df.official_split.fillna("").value_counts().items()}},
        "notes": imp.notes, "skipped": imp.skipped, "duplicates": duplicates,
    }
    write_json(record, out / IMPORT_JSON)
    warn_skipped_rows(imp, source)
    return record


def read_lesions(data) -> pd.DataFrame:
    """``<data>/lesions.csv`` (boxes in stored-image pixels), or an empty table when the dataset has none."""
    path = Path(data) / LESIONS_CSV
    if not path.exists():
        return pd.DataFrame(columns=LESION_COLUMNS)
    return pd.read_csv(path, dtype={"image_id": str, "finding": str, "pathology": str})

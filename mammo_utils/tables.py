"""The RSNA CSVs, read with explicit dtypes and validated up front.

Ids are strings everywhere: RSNA's are digits, VinDr's are 32-character hex, CBIS-DDSM's are
``P_00001``. Read as text they never become floats (one blank cell would otherwise turn ``27093``
into ``27093.0`` in every path built from it); :func:`read_csv` reads every table the workbook
writes the same way. Every problem is reported as one :class:`UserError` line that names
the CSV, the row numbers (as in a spreadsheet: header = row 1) and what is wrong.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import paths
from .errors import UserError

TRAIN_COLUMNS = ["site_id", "patient_id", "image_id", "laterality", "view", "age", "cancer", "biopsy",
                 "invasive", "BIRADS", "implant", "density", "machine_id", "difficult_negative_case"]
TEST_COLUMNS = ["site_id", "patient_id", "image_id", "laterality", "view", "age", "implant", "machine_id",
                "prediction_id"]
REQUIRED = ["patient_id", "image_id", "laterality", "view"]
KNOWN_VIEWS = {"CC", "MLO", "AT", "LM", "ML", "LMO", "XCCL", "XCCM", "FB", "SIO"}
ID_COLUMNS = {"patient_id": str, "image_id": str, "prediction_id": str, "source": str, "official_split": str,
              "duplicate_group": str}
_STRING_COLUMNS = {**ID_COLUMNS, "laterality": str, "view": str, "density": str}


def _rows(mask) -> str:
    rows = [int(i) + 2 for i in mask[mask].index[:8]]
    more = int(mask.sum()) - len(rows)
    return ", ".join(map(str, rows)) + (f" and {more} more" if more > 0 else "")


def _as_id_text(df: pd.DataFrame, col: str, path: Path) -> None:
    """Ids as stripped text; they become folder and file names, so only letters, digits, ``._-``."""
    text = df[col].fillna("").astype(str).str.strip()
    blank = text == ""
    if blank.any():
        raise UserError(f"{path}: {col} is empty in row(s) {_rows(blank)}")
    problems = text.map(paths.id_problem)
    bad = problems.notna()
    if bad.any():
        raise UserError(f"{path}: {col} may hold only letters, digits, '.', '_' and '-' (it names files; no '..', "
                        f"no leading '.' or '-'); bad value(s) {text[bad].head(3).tolist()} in row(s) {_rows(bad)}: "
                        f"{problems[bad].iloc[0]}")
    df[col] = text


def read_csv(path, **kw) -> pd.DataFrame:
    """A CSV the workbook wrote (folds, manifests, predictions, holdout), with its ids as text."""
    dtype = {**ID_COLUMNS, **kw.pop("dtype", {})}
    return pd.read_csv(path, dtype=dtype, **kw)


def validate_table(df: pd.DataFrame, path, labelled: bool) -> pd.DataFrame:
    """Check and normalize a split table; raises one UserError naming the CSV, rows and problem."""
    path = Path(path)
    missing = [c for c in REQUIRED + (["cancer"] if labelled else []) if c not in df]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing}; an RSNA table has {REQUIRED + ['cancer'] if labelled else REQUIRED}")
    if df.empty:
        raise UserError(f"{path}: the table has no rows")
    df = df.copy()
    for col in ("patient_id", "image_id"):
        _as_id_text(df, col, path)
    dup = df.image_id.duplicated(keep=False)
    if dup.any():
        raise UserError(f"{path}: image_id is not unique: {df.image_id[dup].drop_duplicates().head(3).tolist()} "
                        f"repeat in row(s) {_rows(dup)}; remove the duplicates")
    lat = df.laterality.astype(str).str.strip()
    bad = ~lat.isin(["L", "R"])
    if bad.any():
        raise UserError(f"{path}: laterality must be L or R (upper case); got {lat[bad].drop_duplicates().head(3).tolist()} "
                        f"in row(s) {_rows(bad)}")
    df["laterality"] = lat
    df["view"] = df.view.astype(str).str.strip()
    if labelled:
        cancer = pd.to_numeric(df.cancer, errors="coerce")
        bad = ~cancer.isin([0, 1])
        if bad.any():
            raise UserError(f"{path}: cancer must be 0 or 1; got {df.cancer[bad].drop_duplicates().head(3).tolist()} "
                            f"in row(s) {_rows(bad)}")
        df["cancer"] = cancer.astype("int64")
    if "prediction_id" in df:
        expect = df.patient_id.astype(str) + "_" + df.laterality
        bad = df.prediction_id.astype(str) != expect
        if bad.any():
            raise UserError(f"{path}: prediction_id must be <patient_id>_<laterality>; row(s) {_rows(bad)} disagree")
    return df


def unknown_views(df: pd.DataFrame) -> list[str]:
    """Views outside the RSNA vocabulary (reported, not refused: they are still images of a breast)."""
    return sorted(set(df.view) - KNOWN_VIEWS)


def read_table(data, split: str = "train") -> pd.DataFrame:
    """``<data>/<split>.csv`` validated, with the breast id ``prediction_id`` added."""
    path = paths.split_csv(data, split)
    if not path.exists():
        raise UserError(f"{path} not found: point data_dir at a folder in the RSNA layout "
                        f"({split}.csv + {split}_images/<patient_id>/<image_id>.dcm)")
    try:
        df = pd.read_csv(path, dtype=_STRING_COLUMNS, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable CSV ({exc})") from None
    df = validate_table(df, path, labelled="cancer" in df)
    return with_prediction_id(df)


def with_prediction_id(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the competition's breast id ``prediction_id = f"{patient_id}_{laterality}"`` (kept if present)."""
    if "prediction_id" in df:
        return df
    return df.assign(prediction_id=df.patient_id.astype(str) + "_" + df.laterality.astype(str))


def sources(df: pd.DataFrame) -> pd.Series:
    """Each row's dataset: its ``source`` cell, or ``"rsna"`` for a folder that has none (the RSNA layout)."""
    if "source" not in df:
        return pd.Series("rsna", index=df.index)
    return df.source.fillna("").replace("", "rsna")


def read_manifest(out) -> pd.DataFrame:
    """The manifest of a preprocessing output folder (absolute PNG paths in ``abs_path``)."""
    out = Path(out)
    path = out / paths.MANIFEST
    if not path.exists():
        raise UserError(f"{path} not found: preprocess first (notebook 02 or `python -m mammo_utils preprocess`)")
    df = read_csv(path, dtype={"path": str})
    df["abs_path"] = [str(out / p) for p in df.path]
    return df

"""The bookkeeping of a preprocessing folder: manifest and error tables written line by line, the
settings it was made with, and whether a source changed since. A killed run loses at most one torn line."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .. import paths
from ..errors import UserError
from ..tables import read_csv
from .preprocess import PreprocessConfig

ID_COLUMNS = ["patient_id", "image_id", "laterality", "view"]
CARRY_COLUMNS = ["site_id", "machine_id", "age", "cancer", "biopsy", "invasive", "BIRADS", "density", "implant",
                 "difficult_negative_case", "prediction_id", "source", "official_split"]
INFO_COLUMNS = ["source_rows", "source_cols", "photometric", "bits_stored", "syntax", "voi", "backend", "decode_scale",
                "frames", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1", "flipped", "source_bytes", "source_mtime_ns", "path",
                "seconds"]
ERROR_COLUMNS = ["image_id", "file", "error_type", "message"]


def read_rows(path: Path, key: str = "image_id") -> pd.DataFrame:
    """Read a manifest written line by line by a run that may have been killed.

    A torn last line (a row cut mid-write) is dropped: it lacks the final column (``seconds``) or
    its key is empty. A repeated key keeps its last row.
    """
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    df = read_csv(path, on_bad_lines="skip", engine="python", dtype={"path": str})
    if key in df:
        df = df[df[key].notna() & (df[key].str.strip() != "")]
        last = df.columns[-1]
        if last == "seconds":
            df = df[pd.to_numeric(df[last], errors="coerce").notna()]
        df = df.drop_duplicates(key, keep="last")
    return df


def write_csv_atomic(df: pd.DataFrame, path: Path) -> None:
    """Write via a temporary file of this process's own and rename: readers never see half a table."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


class RowAppender:
    """Append dict rows to a CSV, flushing each line so a killed run loses at most one torn line."""

    def __init__(self, path: Path, columns: list[str]):
        new = not path.exists() or path.stat().st_size == 0
        self.f = open(path, "a", newline="")
        self.w = csv.DictWriter(self.f, fieldnames=columns, extrasaction="ignore")
        if new:
            self.w.writeheader()

    def add(self, row: dict) -> None:
        self.w.writerow(row)
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def check_writable(folder: Path) -> None:
    """Fail before any work when the output folder cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"output folder {folder} is not writable ({exc.strerror or exc})") from None


def source_key(path) -> dict:
    """What says a source file is the one an output was made from: its size and modification time."""
    st = os.stat(path)
    return {"source_bytes": st.st_size, "source_mtime_ns": st.st_mtime_ns}


def unchanged_sources(manifest: pd.DataFrame, data: Path, split: str) -> np.ndarray:
    """Per manifest row: whether its source still has the size and time it was made from (rows of
    earlier versions, which did not record them, count as unchanged; a missing source as changed)."""
    if "source_bytes" not in manifest or "source_mtime_ns" not in manifest:
        return np.ones(len(manifest), bool)
    keep = []
    for r in manifest.itertuples():
        if r.source_bytes != r.source_bytes:  # NaN: not recorded
            keep.append(True)
            continue
        try:
            now = source_key(paths.dicom_path(data, split, r.patient_id, r.image_id))
        except OSError:
            keep.append(False)
            continue
        keep.append(now["source_bytes"] == r.source_bytes and now["source_mtime_ns"] == r.source_mtime_ns)
    return np.array(keep, bool)


def read_errors(out) -> pd.DataFrame:
    """The files of a preprocessing folder that are still failing, with their reasons."""
    path = Path(out) / paths.ERRORS
    return read_csv(path) if path.exists() and path.stat().st_size else pd.DataFrame(columns=ERROR_COLUMNS)


def read_config(out) -> PreprocessConfig:
    """The settings an output folder was made with (so inference repeats them exactly)."""
    return PreprocessConfig.from_json(json.loads((Path(out) / paths.PREPROCESS_CONFIG).read_text())["config"])

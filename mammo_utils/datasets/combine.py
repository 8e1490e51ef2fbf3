"""Several RSNA-layout folders as one: links, a ``source`` column, and ids unique across sources."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .. import paths
from ..errors import UserError
from .common import (
    IMPORT_JSON,
    LESIONS_CSV,
    TRAIN_COLUMNS,
    check_destination,
    place,
    read_lesions,
    write_csv,
)


def source_name(folder: Path, df: pd.DataFrame) -> pd.Series:
    """Each row's source: its ``source`` cell (an imported dataset), else the folder's name."""
    default = folder.resolve().name
    if "source" not in df:
        return pd.Series(default, index=df.index)
    return df.source.fillna("").replace("", default)


def combine(folders, out, copy: bool = False, progress: bool = True) -> dict:
    """``out`` = every folder's training images, ids prefixed ``<source>-`` so two datasets never share a
    patient or an image id, with their lesion boxes; the record is also ``out/import.json``."""
    from ..progress import bar
    from ..tables import read_table

    out = Path(out)
    if len(folders) < 2:
        raise UserError("combine needs at least two dataset folders")
    tables, lesions, seen = [], [], {}
    for folder in map(Path, folders):
        check_destination(folder, out)
        df = read_table(folder, "train").drop(columns=["prediction_id"])
        df["source"] = source_name(folder, df)
        for name in set(df.source):
            if name in seen:
                raise UserError(f"source {name!r} is in both {seen[name]} and {folder}: combine each dataset once")
            seen[name] = folder
        df["src"] = [paths.dicom_path(folder, "train", p, i) for p, i in zip(df.patient_id, df.image_id)]
        rename = dict(zip(df.image_id, df.source + "-" + df.image_id))
        df["patient_id"] = df.source + "-" + df.patient_id
        df["image_id"] = df.image_id.map(rename)
        les = read_lesions(folder)
        lesions.append(les.assign(image_id=les.image_id.map(rename)).dropna(subset=["image_id"]))
        tables.append(df)
    table = pd.concat(tables, ignore_index=True)
    extra = [c for c in table.columns if c not in TRAIN_COLUMNS + ["src"]]
    table = table[[c for c in TRAIN_COLUMNS if c in table] + extra + ["src"]]
    missing = [str(s) for s in table.src if not Path(s).exists()]
    if missing:
        raise UserError(f"{len(missing)} image(s) listed in the tables are not on disk, e.g. {missing[:2]}")
    out.mkdir(parents=True, exist_ok=True)
    made = set()
    for r in bar(list(table.itertuples()), desc="linking" if not copy else "copying", unit="file",
                 disable=not progress):
        place(Path(r.src), paths.dicom_path(out, "train", r.patient_id, r.image_id), copy, made)
    write_csv(table.drop(columns=["src"]), paths.split_csv(out, "train"))
    write_csv(pd.concat(lesions, ignore_index=True), out / LESIONS_CSV)
    per_source = table.groupby("source").agg(images=("image_id", "size"), patients=("patient_id", "nunique"),
                                              cancer_images=("cancer", "sum"))
    record = {"combined": {name: str(Path(f).resolve()) for name, f in seen.items()},
              "files": "copied" if copy else "linked",
              "counts": {s: {k: int(v) for k, v in row.items()} for s, row in per_source.iterrows()}}
    (out / IMPORT_JSON).write_text(json.dumps(record, indent=2))
    return record

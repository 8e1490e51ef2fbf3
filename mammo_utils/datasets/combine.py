"""Several RSNA-layout folders as one: links, a ``source`` column, and ids unique across sources."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import paths
from ..errors import UserError
from .common import (
    IMPORT_JSON,
    LESIONS_CSV,
    TRAIN_COLUMNS,
    check_destination,
    check_free,
    check_out,
    place,
    read_lesions,
    write_csv,
    write_json,
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
    parts = {str(Path(f).resolve()) for f in folders}
    prior = check_out(out, lambda r: set(dict(r.get("combined") or {}).values()) == parts,
                      "these folders (combine)")
    for folder in map(Path, folders):
        df = read_table(folder, "train").drop(columns=["prediction_id"])
        df["source"] = source_name(folder, df)
        for name in sorted(set(df.source)):
            paths.safe_id(name, "source", f"{paths.split_csv(folder, 'train')} (or the folder's name)")
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
    pairs = [(Path(s), paths.dicom_path(out, "train", p, i)) for s, p, i in zip(table.src, table.patient_id, table.image_id)]
    check_free(pairs, copy, prior)
    out.mkdir(parents=True, exist_ok=True)
    made = set()
    for src_file, dst in bar(pairs, desc="linking" if not copy else "copying", unit="file", disable=not progress):
        place(src_file, dst, copy, made, prior)
    write_csv(table.drop(columns=["src"]), paths.split_csv(out, "train"))
    write_csv(pd.concat(lesions, ignore_index=True), out / LESIONS_CSV)
    per_source = table.groupby("source").agg(images=("image_id", "size"), patients=("patient_id", "nunique"),
                                              cancer_images=("cancer", "sum"))
    record = {"combined": {name: str(Path(f).resolve()) for name, f in seen.items()},
              "files": "copied" if copy else "linked",
              "counts": {s: {k: int(v) for k, v in row.items()} for s, row in per_source.iterrows()}}
    write_json(record, out / IMPORT_JSON)
    return record

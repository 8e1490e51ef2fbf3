"""Several RSNA-layout folders as one: links, a ``source`` column, and ids unique across sources."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import paths
from ..errors import UserError
from .common import LESIONS_CSV, TRAIN_COLUMNS, read_lesions
from .destination import (
    IMPORT_JSON,
    check_destination,
    check_free,
    check_inside,
    check_out,
    mark_pending,
    place,
    write_csv,
    write_json,
)
from .headers import header_facts


def source_name(folder: Path, df: pd.DataFrame) -> pd.Series:
    """Each row's source: its ``source`` cell (an imported dataset), else the folder's name."""
    default = folder.resolve().name
    if "source" not in df:
        return pd.Series(default, index=df.index)
    return df.source.fillna("").replace("", default)


def without_duplicates(table: pd.DataFrame, lesions: pd.DataFrame, jobs: int = -1, progress: bool = True) -> tuple:
    """``(table, lesions, report, notes)`` with one image of each group of duplicates, within and across
    sources (:mod:`.duplicates`); a source's own ``duplicate_group`` is kept, joined with the links found here."""
    from .common import breast_level, parallel_map, uid_conflict_note
    from .duplicates import merge_duplicates, uid_conflicts

    facts = parallel_map(header_facts, [str(s) for s in table.src], jobs, "headers", progress)
    facts = [f if isinstance(f, dict) else {} for f in facts]  # a file a part could not read is kept, unchecked
    table = table.assign(duplicate_group=[f"{s}-{g}" if isinstance(g, str) and g.strip() else "" for s, g in
                                          zip(table.source, table.get("duplicate_group", pd.Series(index=table.index)))])
    conflicts = uid_conflicts([str(s) for s in table.src], facts)
    notes = [uid_conflict_note(conflicts)] if conflicts else []
    rows, merged, report = merge_duplicates(table.to_dict("records"), lesions.to_dict("records"), facts)
    return (breast_level(pd.DataFrame(rows, columns=table.columns)), pd.DataFrame(merged, columns=lesions.columns),
            report, notes)


def combine(folders, out, copy: bool = False, progress: bool = True, jobs: int = -1) -> dict:
    """``out`` = every folder's training images, ids prefixed ``<source>-`` so two datasets never share a
    patient or an image id, with their lesion boxes, each image once (duplicates found across sources);
    the record is also ``out/import.json``."""
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
    folded = table.patient_id.str.casefold() + "/" + table.image_id.str.casefold()
    clash = table[folded.duplicated(keep=False)]
    if len(clash):
        named = ", ".join(f"{p}/{i}" for p, i in zip(clash.patient_id[:2], clash.image_id[:2]))
        raise UserError(f"images {named} differ only by case: one file on a case-insensitive file system (macOS, "
                        f"Windows); rename one in its dataset folder, then combine again")
    extra = [c for c in table.columns if c not in TRAIN_COLUMNS + ["src"]]
    table = table[[c for c in TRAIN_COLUMNS if c in table] + extra + ["src"]]
    missing = [str(s) for s in table.src if not Path(s).exists()]
    if missing:
        raise UserError(f"{len(missing)} image(s) listed in the tables are not on disk, e.g. {missing[:2]}")
    table, lesions, duplicates, notes = without_duplicates(table, pd.concat(lesions, ignore_index=True), jobs, progress)
    pairs = [(Path(s), paths.dicom_path(out, "train", p, i)) for s, p, i in zip(table.src, table.patient_id, table.image_id)]
    check_inside(out, [d for _, d in pairs])
    check_free(pairs, copy, prior)
    combined = {name: str(Path(f).resolve()) for name, f in seen.items()}
    mark_pending(out, {"combined": combined, "files": "copied" if copy else "linked"}, [d for _, d in pairs])
    made = set()
    for src_file, dst in bar(pairs, desc="linking" if not copy else "copying", unit="file", disable=not progress):
        place(src_file, dst, copy, made, prior)
    write_csv(table.drop(columns=["src"]), paths.split_csv(out, "train"))
    write_csv(lesions, out / LESIONS_CSV)
    per_source = table.groupby("source").agg(images=("image_id", "size"), patients=("patient_id", "nunique"),
                                              cancer_images=("cancer", "sum"))
    record = {"combined": combined, "files": "copied" if copy else "linked",
              "counts": {s: {k: int(v) for k, v in row.items()} for s, row in per_source.iterrows()},
              "duplicate_images_dropped": sum(len(g["dropped"]) for g in duplicates), "duplicates": duplicates,
              "notes": notes}
    write_json(record, out / IMPORT_JSON)
    return record

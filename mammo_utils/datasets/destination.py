"""Where an import writes: ``--out`` must be new, empty, or an earlier import of the same source, and
only that import's own files are ever replaced; tables and records are written through temporary
files. The source folder is never written to.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import paths
from ..errors import UserError

IMPORT_JSON = "import.json"


@dataclass
class Prior:
    """What an earlier import of the same source wrote into ``--out``: the only files a rerun may replace."""

    files: set = field(default_factory=set)   # str paths of its images
    mode: str = ""                            # "linked", "copied" or "written"
    pending: set = field(default_factory=set)  # str paths an interrupted run was about to write (any kind)

    def owns(self, path: Path) -> bool:
        """True when ``path`` is one of the earlier import's images, of the kind it made (a link or a file),
        or one that an interrupted run of it had claimed (checked free before it wrote anything)."""
        if str(path) in self.pending:
            return True
        if str(path) not in self.files:
            return False
        return os.path.islink(path) == (self.mode == "linked")


def check_destination(src: Path, out: Path) -> None:
    """Refuse a destination inside the source (the source is never written to) or the source itself."""
    src, out = Path(src).resolve(), Path(out).resolve()
    if out == src or src in out.parents:
        raise UserError(f"--out {out} is inside the source folder {src}; the source is never written to: "
                        f"choose a folder outside it")


def check_out(out: Path, same, what: str) -> Prior:
    """``--out`` may be new, empty, or an earlier import of the same source (``same(record)`` is true for its
    ``import.json``); anything else is a user's folder and one UserError says so before anything is written.
    Returns the earlier import's images: the only files a rerun may replace."""
    out = Path(out)
    if os.path.lexists(out) and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; give a new or empty folder to write into")
    if not out.exists() or not any(out.iterdir()):
        return Prior()
    try:
        record = json.loads((out / IMPORT_JSON).read_text())
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or not same(record):
        held = ", ".join(sorted(p.name for p in out.iterdir())[:3])
        raise UserError(f"--out {out} already holds files ({held}, ...) and is not an earlier import of {what}; "
                        f"nothing was written: choose a new or empty folder")
    try:
        table = pd.read_csv(paths.split_csv(out, "train"), dtype=str, usecols=["patient_id", "image_id"])
    except (OSError, ValueError):
        table = pd.DataFrame(columns=["patient_id", "image_id"])
    files = {str(paths.dicom_path(out, "train", p, i)) for p, i in zip(table.patient_id, table.image_id)
             if paths.id_problem(p) is None and paths.id_problem(i) is None}
    pending = record.get("pending")
    pending = {str(out / str(rel)) for rel in pending} if isinstance(pending, list) else set()
    return Prior(files=files, mode=str(record.get("files", "")), pending=pending)


def mark_pending(out: Path, head: dict, files) -> None:
    """Before a run writes its first image: an ``import.json`` (``head`` plus ``"complete": false``) naming
    the images it is about to write, each already checked free. A run stopped midway leaves it, so a rerun
    (:func:`check_out`) knows the folder and those images as its own; the finished record replaces it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json({**head, "complete": False, "pending": sorted(os.path.relpath(f, out) for f in files)},
               out / IMPORT_JSON)


def up_to_date(src_file: Path, dst_file: Path, copy: bool) -> bool:
    """True when ``dst_file`` already is what :func:`place` would make of ``src_file`` (a rerun leaves it)."""
    if not os.path.lexists(dst_file):
        return False
    if not copy:
        return dst_file.is_symlink() and Path(os.readlink(dst_file)) == src_file
    return not dst_file.is_symlink() and dst_file.stat().st_size == src_file.stat().st_size \
        and dst_file.stat().st_mtime >= src_file.stat().st_mtime


def check_inside(out: Path, files) -> None:
    """One UserError, before anything is written, when a folder where ``files`` would go is a link that leads
    out of ``out`` (``out`` itself may be a link: that is where the user asked for the import)."""
    top = os.path.realpath(out)
    for parent in sorted({str(Path(f).parent) for f in files}):
        if os.path.lexists(parent) and os.path.commonpath([top, os.path.realpath(parent)]) != top:
            raise UserError(f"{parent} is a link to {os.path.realpath(parent)}, outside --out {out}; nothing was "
                            f"written: an import writes only inside its own folder (remove the link or choose a "
                            f"new folder)")


def check_free(pairs, copy: bool, prior: Prior) -> None:
    """One UserError, before anything is written, when a destination holds a file this import did not make
    (a user's file is never replaced, whatever its name) or is the source file itself."""
    taken = [dst for src_file, dst in pairs if os.path.lexists(dst) and not up_to_date(Path(src_file).resolve(), dst, copy)
             and (not prior.owns(dst) or (not dst.is_symlink() and dst.exists() and os.path.samefile(dst, src_file)))]
    if taken:
        raise UserError(f"{len(taken)} file(s) where the import would write are not its own earlier output, e.g. "
                        f"{taken[0]}; nothing was replaced: move them away or choose a new folder")


def place(src_file: Path, dst_file: Path, copy: bool, made: set | None = None, prior: Prior | None = None) -> None:
    """``dst_file`` as a symbolic link to ``src_file`` (or a copy); a rerun leaves a correct one alone.
    Only ``prior``'s files (the same import's earlier output) are ever replaced.
    ``made``: folders already created in this run (one mkdir per patient, not per image)."""
    src_file = Path(src_file).resolve()
    if os.path.lexists(dst_file):
        if up_to_date(src_file, dst_file, copy):
            return
        check_free([(src_file, dst_file)], copy, prior or Prior())
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


def write_json(record: dict, path: Path) -> None:
    """Write through a temporary file (never through a link that stands at ``path``)."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp, path)

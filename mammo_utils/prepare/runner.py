"""The resumable, parallel preprocessing of a whole dataset split (local processes or a Dask cluster).

Nothing here imports torch (worker start-up matters on 2 CPUs)."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import parallel, paths
from ..errors import UserError
from .manifest import (
    CARRY_COLUMNS,
    ERROR_COLUMNS,
    ID_COLUMNS,
    INFO_COLUMNS,
    RowAppender,
    check_writable,
    read_errors,
    read_rows,
    source_key,
    unchanged_sources,
    write_csv_atomic,
)
from .png import write_png_atomic
from .preprocess import PreprocessConfig, preprocess_file

log = logging.getLogger(__name__)


def _job(row: dict, dcm_path: str, out_dir: str, cfg: PreprocessConfig) -> dict:
    """Worker: never raises; returns a manifest row or an error row."""
    import cv2

    cv2.setNumThreads(1)  # one process per core already: OpenCV's own threads would only contend
    t0 = time.perf_counter()
    rel = paths.png_relpath(row["patient_id"], row["image_id"])
    try:
        source = source_key(dcm_path)  # taken before reading: a file changed meanwhile is redone next time
        img, info = preprocess_file(dcm_path, cfg, row.get("laterality"))
        write_png_atomic(Path(out_dir) / rel, img)
    except Exception as exc:  # noqa: BLE001 - a batch job logs bad files and goes on
        return {"ok": False, "image_id": row["image_id"], "file": dcm_path, "error_type": type(exc).__name__,
                "message": str(exc)}
    return {"ok": True, **row, **info, **source, "path": rel, "seconds": round(time.perf_counter() - t0, 4)}


def _job_isolated(row: dict, dcm_path: str, out_dir: str, cfg: PreprocessConfig) -> dict:
    """Run one file in its own process, so a decoder that crashes the interpreter only fails that file."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(1, mp_context=mp.get_context("fork")) as pool:
        try:
            return pool.submit(_job, row, dcm_path, out_dir, cfg).result()
        except BrokenProcessPool:
            return {"ok": False, "image_id": row["image_id"], "file": dcm_path, "error_type": "DecoderCrash",
                    "message": "the decoding process died (malformed file crashed a native decoder)"}


def _run_tasks(tasks, out_dir: str, cfg: PreprocessConfig, jobs: int, scheduler: str | None):
    """Yield job results in completion order. If a worker dies, the unfinished files run again one
    per process: the culprit is isolated and reported, every other file is still processed."""
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    pending = {r["image_id"]: (r, p) for r, p in tasks}
    try:
        for res in parallel.map_unordered(_job, [(r, p, out_dir, cfg) for r, p in tasks], jobs, scheduler):
            pending.pop(res["image_id"], None)
            yield res
    except TerminatedWorkerError:
        log.error("a worker process died; running the %d unfinished files one per process", len(pending))
        for r, p in list(pending.values()):
            yield _job_isolated(r, p, out_dir, cfg)


def check_not_someone_elses(out: Path) -> None:
    """Write only into a new or empty folder, or an earlier preprocessing output (it has preprocess.json):
    a folder of someone's files is refused before anything in it is touched."""
    if not out.is_dir() or (out / paths.PREPROCESS_CONFIG).exists():
        return
    theirs = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    if theirs:
        raise UserError(f"{out} holds files that are not a preprocessing output ({', '.join(theirs[:3])}"
                        f"{', ...' if len(theirs) > 3 else ''}): choose a new or empty folder")


def run_preprocess(data, split: str = "train", out=None, cfg: PreprocessConfig | None = None, jobs: int = 2,
                   limit: int | None = None, progress: bool = True, scheduler: str | None = None) -> dict:
    """Preprocess ``<data>/<split>_images`` listed in ``<data>/<split>.csv`` into ``out``; resumable.

    Writes ``<out>/<patient_id>/<image_id>.png``, ``manifest.csv``, ``errors.csv`` and
    ``preprocess.json``. A rerun skips images whose manifest row and PNG exist, retries failures and
    regenerates missing PNGs. ``scheduler``: None (local processes), ``local:N`` or ``tcp://host:port``
    (a Dask cluster). Returns a summary dict (counts, seconds, images/s).
    """
    from ..tables import read_table, unknown_views

    cfg = cfg or PreprocessConfig()
    if limit is not None and int(limit) < 1:
        raise UserError(f"limit must be a positive number of images, got {limit}")
    data = Path(data)
    out = Path(out or data / f"{split}_{paths.format_size(cfg.size)}")
    table = read_table(data, split)
    odd = unknown_views(table)
    if odd:
        log.warning("%s: views outside the RSNA vocabulary: %s (processed like the others)",
                    paths.split_csv(data, split), odd)
    if limit:
        table = table.head(int(limit))
    jobs = parallel.resolve_jobs(jobs) if scheduler is None else jobs
    check_not_someone_elses(out)
    check_writable(out)
    from ..locks import folder_lock

    with folder_lock(out, f"preprocessing {split}"):
        summary = _preprocess_locked(data, split, out, cfg, table, jobs, progress, scheduler)
    log.info("preprocess summary: %s", summary)
    return summary


def _preprocess_locked(data: Path, split: str, out: Path, cfg: PreprocessConfig, table: pd.DataFrame, jobs: int,
                       progress: bool, scheduler: str | None) -> dict:
    """The body of :func:`run_preprocess`, run while this process holds the output folder's lock."""
    from ..progress import bar

    saved_cfg = out / paths.PREPROCESS_CONFIG
    if saved_cfg.exists():
        old = json.loads(saved_cfg.read_text()).get("config", {})
        if PreprocessConfig.from_json(old).to_json() != cfg.to_json():
            raise UserError(f"{out} holds images made with other settings ({old}); use a new --out or delete it")
    saved_cfg.write_text(json.dumps({"config": cfg.to_json(), "data": str(data), "split": split}, indent=2,
                                    default=list))

    for stale in out.rglob(".*.tmp.png"):  # left by a worker killed mid-write
        stale.unlink(missing_ok=True)
    manifest_path, errors_path = out / paths.MANIFEST, out / paths.ERRORS
    keep = [c for c in ID_COLUMNS + CARRY_COLUMNS if c in table]
    columns = keep + INFO_COLUMNS
    manifest = read_rows(manifest_path)
    if len(manifest):
        exists = np.array([(out / p).exists() for p in manifest.path], bool)
        changed = exists & ~unchanged_sources(manifest, data, split)
        if changed.any():
            log.warning("%d source file(s) changed since they were preprocessed: redone", int(changed.sum()))
        manifest = manifest[exists & ~changed].reindex(columns=columns)
        write_csv_atomic(manifest, manifest_path)
    done = set(manifest.image_id) if len(manifest) else set()
    todo = table[~table.image_id.isin(done)]
    tasks = [(r, str(paths.dicom_path(data, split, r["patient_id"], r["image_id"])))
             for r in todo[keep].to_dict("records")]
    t0 = time.perf_counter()
    rows, errors, attempted = RowAppender(manifest_path, columns), [], set()
    n_ok = 0
    try:
        results = _run_tasks(tasks, str(out), cfg, jobs, scheduler)
        for res in bar(results, total=len(tasks), desc=f"preprocess {split}", unit="img", disable=not progress):
            attempted.add(res["image_id"])
            if res.pop("ok"):
                rows.add(res)
                n_ok += 1
            else:
                log.warning("failed: %s: %s: %s", res["file"], res["error_type"], res["message"])
                errors.append(res)
    finally:
        rows.close()
        write_csv_atomic(read_rows(manifest_path), manifest_path)
        # errors.csv lists every image that is still failing: an earlier run's rows stay for the images this
        # run did not reach (a bad scheduler, a full disk, an interrupt never wipes them).
        earlier = read_errors(out)
        earlier = earlier[~earlier.image_id.isin(attempted | done)] if len(earlier) else earlier
        write_csv_atomic(pd.concat([earlier, pd.DataFrame(errors, columns=ERROR_COLUMNS)], ignore_index=True),
                         errors_path)
        parallel.shutdown_local_pool()
    seconds = time.perf_counter() - t0
    return dict(split=split, out=str(out), total=len(table), skipped=len(table) - len(tasks), processed=n_ok,
                failed=len(errors), seconds=round(seconds, 2),
                images_per_second=round(len(tasks) / seconds, 2) if tasks and seconds > 0 else None)


def load_before_after(data, split: str, out, rows: pd.DataFrame, display_px: int = 384):
    """Source image (reduced for display) with the crop box, and the written PNG, for manifest rows."""
    from ..dicom import read_dicom
    from .png import load_png

    before, boxes, after, titles = [], [], [], []
    for r in rows.itertuples():
        d = read_dicom(paths.dicom_path(data, split, r.patient_id, r.image_id), min_size=(display_px, display_px // 2))
        s = d.scale
        before.append(d.image)
        boxes.append((r.bbox_y0 / s, r.bbox_x0 / s, r.bbox_y1 / s, r.bbox_x1 / s))
        after.append(load_png(Path(out) / r.path))
        titles.append(f"machine {r.machine_id} {r.laterality}-{r.view} {r.photometric}")
    return before, boxes, after, titles

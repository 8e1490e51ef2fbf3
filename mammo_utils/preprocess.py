"""Preprocessing: the settings, the per-file job (DICOM -> PNG) and the resumable parallel runner.

Nothing here imports torch (worker start-up matters on 2 CPUs). The pixel logic lives in
:mod:`.crop` (pure arrays) and :mod:`.dicom` (reading); this module only strings them together.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from . import crop as crop_ops
from . import parallel, paths
from .tables import read_csv
from .errors import UserError
from .png import write_png_atomic

if TYPE_CHECKING:
    from .dicom.read import StoredImage

log = logging.getLogger(__name__)

MIN_DYNAMIC_RANGE = 1e-3  # an image whose values span less than this is blank, not a mammogram


@dataclass
class PreprocessConfig:
    """Everything that determines the output pixels; saved as preprocess.json beside the images."""

    size: tuple[int, int] = (1024, 512)
    keep_aspect: bool = True
    bits: int = 8
    crop: bool = True
    mask_outside: bool = True     # zero labels/markers isolated from the breast (never tissue)
    orient: bool = True
    backend: str = "auto"
    reduced_decode: bool = True   # JPEG 2000: decode the coarsest wavelet level that covers `size`
    window_index: int = 0
    voi: bool = True

    def __post_init__(self):
        self.size = paths.parse_size(self.size)
        if self.bits not in (8, 16):
            raise UserError(f"bits must be 8 or 16, got {self.bits}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "PreprocessConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def work_image(s: StoredImage, path=None, work_px: int = crop_ops.WORK_PX) -> tuple[np.ndarray, float]:
    """Display image at about the segmentation work size, padding zeroed; and its scale in work
    pixels per stored pixel. Raises on a blank image (nothing to crop), naming ``path``.

    Large images are averaged over integer blocks (OpenCV's fast path; the long side lands within
    ~20 % of ``work_px``), and the table is looked up on ~0.1 megapixels only."""
    h, w = s.stored.shape
    f = round(max(h, w) / work_px)
    if f >= 2:
        small = crop_ops.area_shrink(s.stored, f)
        k, covered = 1.0 / f, (0, 0, small.shape[0] * f, small.shape[1] * f)  # the trimmed rows/columns drop
    else:
        k, covered = work_px / max(h, w), (0, 0, h, w)
        small = crop_ops.resize(s.stored, (max(1, round(h * k)), max(1, round(w * k))))
    img = s.display(small)
    if s.pad_mask is not None:
        img[crop_ops.mask_on_output(s.pad_mask, (h, w), covered, small.shape)] = 0.0
    if float(img.max()) - float(img.min()) < MIN_DYNAMIC_RANGE:
        from .dicom import DicomReadError

        raise DicomReadError(path, f"image is blank: every pixel displays as {float(img.mean()):.3f} "
                                   f"(a constant image has no breast to crop)")
    return img, k


def output_pixels(s: StoredImage, box: crop_ops.Box, shape: tuple[int, int], bits: int) -> np.ndarray:
    """The crop ``box`` of ``s`` resized to ``shape`` and displayed, as uint8/uint16.

    Where the display is a straight line between its saturation points (LINEAR windows, min-max;
    stored values were clamped to those points on reading), the stored values are resampled and the
    quantized table is looked up for the output pixels only: equal to displaying first, to rounding.
    A curved display (SIGMOID, a VOI LUT Sequence) is looked up on the crop first, then resampled."""
    crop = crop_ops.crop(s.stored, box)
    if s.display.linear:
        return s.display.to_uint(crop_ops.resize(crop, shape), bits)
    return crop_ops.resize(s.display.to_uint(crop, bits), shape)


def source_box(box: crop_ops.Box, scale: float, source_shape) -> crop_ops.Box:
    """A box in reduced stored pixels as a box in the file's full-size pixels."""
    rows, cols = source_shape
    return (int(box[0] * scale), int(box[1] * scale), min(rows, int(round(box[2] * scale))),
            min(cols, int(round(box[3] * scale))))


def locate_breast(s: StoredImage, path=None) -> tuple[crop_ops.Box, crop_ops.Segmentation]:
    """(breast box in ``s.stored`` pixels, segmentation on the work image).

    The one place preprocessing and the crop-quality check find the breast. Raises on a blank image."""
    work, k = work_image(s, path)
    seg = crop_ops.segment_breast(work, max(work.shape))  # already the work size
    return crop_ops.box_from_mask(seg.breast, seg.scale * k, s.stored.shape), seg


def preprocess_stored(s: StoredImage, cfg: PreprocessConfig, laterality: str | None = None, path=None, found=None):
    """Segment -> crop -> resize -> display -> orient -> pad. Returns (uint8/uint16 image of ``cfg.size``,
    box in ``s.stored`` pixels, flipped).

    Segmentation runs on a work-size copy (``found``: a :func:`locate_breast` result already at hand);
    the output pixels come from :func:`output_pixels`. No full-size float image is ever made.
    """
    h, w = s.stored.shape
    box, remove = (0, 0, h, w), None
    if cfg.crop or cfg.mask_outside:
        found_box, seg = found or locate_breast(s, path)
        box = found_box if cfg.crop else box
        if cfg.mask_outside and seg.remove.any():
            remove = seg.remove
    else:
        work_image(s, path)  # a blank image is still an error
    shape = crop_ops.fit_shape((box[2] - box[0], box[3] - box[1]), cfg.size, cfg.keep_aspect)
    out = output_pixels(s, box, shape, cfg.bits)
    for mask in (s.pad_mask, remove):  # padding and isolated labels/markers become background
        if mask is not None:
            out[crop_ops.mask_on_output(mask, (h, w), box, shape)] = 0
    flipped = False
    if cfg.orient:
        out, flipped = crop_ops.orient(out, laterality)
    return crop_ops.pad_to(out, cfg.size), box, flipped


def crop_is_upsampled(box: crop_ops.Box, cfg: PreprocessConfig) -> bool:
    """Whether resizing the crop ``box`` to its output shape would enlarge it along either axis."""
    bh, bw = box[2] - box[0], box[3] - box[1]
    oh, ow = crop_ops.fit_shape((bh, bw), cfg.size, cfg.keep_aspect)
    return oh > bh or ow > bw


def finer_min_size(box: crop_ops.Box, s: StoredImage, cfg: PreprocessConfig) -> tuple[int, int]:
    """The whole-image size (HxW) a reread must cover so that ``box``'s crop reaches its output shape:
    the reduction level is then chosen for the crop, not for the whole image. Always asks for at
    least one level finer than ``s``, so rereading ends."""
    rows, cols = s.source_shape
    bh, bw = max(1.0, (box[2] - box[0]) * s.scale), max(1.0, (box[3] - box[1]) * s.scale)  # source pixels
    oh, ow = crop_ops.fit_shape((round(bh), round(bw)), cfg.size, cfg.keep_aspect)
    need = (math.ceil(oh * rows / bh) + 1, math.ceil(ow * cols / bw) + 1)  # +1: the box's edges round down
    one_finer = math.ceil(rows / (s.scale / 2))
    return max(need[0], one_finer), need[1]


def read_for_crop(path, cfg: PreprocessConfig):
    """(stored image, locate_breast result or None): read at the coarsest level that keeps the breast
    crop at or above the output resolution.

    The first read is reduced for the whole image; a small breast in a large file would then be
    upsampled, losing the detail where calcifications live. Its box says which level it needs, and
    the file is read again at that level (a finer J2K level, or a smaller area reduction)."""
    from .dicom import read_stored_image

    def read(min_size):
        return read_stored_image(path, backend=cfg.backend, min_size=min_size, window_index=cfg.window_index,
                                 voi=cfg.voi)

    s = read(cfg.size if cfg.reduced_decode else None)
    found = locate_breast(s, path) if cfg.crop or cfg.mask_outside else None
    while cfg.crop and s.scale > 1 and crop_is_upsampled(found[0], cfg):
        s = read(finer_min_size(found[0], s, cfg))
        found = locate_breast(s, path)
    return s, found


def preprocess_file(path, cfg: PreprocessConfig, laterality: str | None = None):
    """DICOM file -> (uint8/uint16 image of cfg.size, info dict for the manifest)."""
    d, found = read_for_crop(path, cfg)
    if d.frames > 1:
        log.warning("%s has %d frames; only the first is used", path, d.frames)
    img, box, flipped = preprocess_stored(d, cfg, laterality, path, found)
    rows, cols = d.source_shape
    src_box = source_box(box, d.scale, d.source_shape)
    info = dict(source_rows=rows, source_cols=cols, photometric=d.photometric,
                bits_stored=d.meta.get("BitsStored"), syntax=d.meta.get("TransferSyntaxUID"), voi=d.display.used_voi,
                backend=d.backend, decode_scale=d.scale, frames=d.frames, bbox_y0=src_box[0], bbox_x0=src_box[1],
                bbox_y1=src_box[2], bbox_x1=src_box[3], flipped=flipped)
    return img, info


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


# --------------------------------------------------------------------------------------------------
# Dataset runner
# --------------------------------------------------------------------------------------------------

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


def run_preprocess(data, split: str = "train", out=None, cfg: PreprocessConfig | None = None, jobs: int = 2,
                   limit: int | None = None, progress: bool = True, scheduler: str | None = None) -> dict:
    """Preprocess ``<data>/<split>_images`` listed in ``<data>/<split>.csv`` into ``out``; resumable.

    Writes ``<out>/<patient_id>/<image_id>.png``, ``manifest.csv``, ``errors.csv`` and
    ``preprocess.json``. A rerun skips images whose manifest row and PNG exist, retries failures and
    regenerates missing PNGs. ``scheduler``: None (local processes), ``local:N`` or ``tcp://host:port``
    (a Dask cluster). Returns a summary dict (counts, seconds, images/s).
    """
    from .tables import read_table, unknown_views

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
    check_writable(out)
    from .locks import folder_lock

    with folder_lock(out, f"preprocessing {split}"):
        summary = _preprocess_locked(data, split, out, cfg, table, jobs, progress, scheduler)
    log.info("preprocess summary: %s", summary)
    return summary


def _preprocess_locked(data: Path, split: str, out: Path, cfg: PreprocessConfig, table: pd.DataFrame, jobs: int,
                       progress: bool, scheduler: str | None) -> dict:
    """The body of :func:`run_preprocess`, run while this process holds the output folder's lock."""
    from .progress import bar

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


def read_errors(out) -> pd.DataFrame:
    """The files of a preprocessing folder that are still failing, with their reasons."""
    path = Path(out) / paths.ERRORS
    return read_csv(path) if path.exists() and path.stat().st_size else pd.DataFrame(columns=ERROR_COLUMNS)


def read_config(out) -> PreprocessConfig:
    """The settings an output folder was made with (so inference repeats them exactly)."""
    return PreprocessConfig.from_json(json.loads((Path(out) / paths.PREPROCESS_CONFIG).read_text())["config"])


def load_before_after(data, split: str, out, rows: pd.DataFrame, display_px: int = 384):
    """Source image (reduced for display) with the crop box, and the written PNG, for manifest rows."""
    from .dicom import read_dicom
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

"""Image preprocessing: pure array operations, the per-file job, and the resumable parallel runner.

Array conventions: float32 HxW in [0, 1], breast bright, background 0; boxes are ``(y0, x0, y1, x1)``
half-open; sizes are ``(height, width)``. Nothing here imports torch (worker start-up matters on 2 CPUs).
"""
from __future__ import annotations

import csv
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]


# --------------------------------------------------------------------------------------------------
# Pure operations
# --------------------------------------------------------------------------------------------------

def _otsu(values: np.ndarray) -> float:
    u8 = np.clip(values * 255.0, 0, 255).astype(np.uint8)
    t, _ = cv2.threshold(u8.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(t) / 255.0


def breast_mask(img: np.ndarray, work_px: int = 512) -> tuple[np.ndarray, float]:
    """Binary mask of the breast on a downsampled copy (long side ``work_px``) and that copy's scale.

    Why this method: after VOI windowing the background is close to black, and the breast is the
    largest bright *region* even when a burned-in label or an implant is brighter. So: a low
    threshold (a third of the way from the background level to Otsu's level, which keeps the
    thin, dark skin edge of fatty breasts) -> morphological opening with a kernel ~2 % of the
    image (erases label strokes and detector-edge strips a few pixels wide, even where they touch
    the breast) -> the largest connected component -> holes filled.
    """
    h, w = img.shape
    s = min(1.0, work_px / max(h, w))
    small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA) if s < 1 else img
    small = cv2.medianBlur(np.ascontiguousarray(small, dtype=np.float32), 3)
    bg = float(np.percentile(small, 2))
    otsu = _otsu(small)
    thr = bg + max(0.33 * (otsu - bg), 0.02)
    mask = (small > thr).astype(np.uint8)
    k = max(3, int(round(0.02 * max(small.shape))) | 1)
    # Pad with background first: OpenCV erodes as if the outside were foreground, which would keep
    # strips lying along the image border.
    padded = cv2.copyMakeBorder(mask, k, k, k, k, cv2.BORDER_CONSTANT, value=0)
    padded = cv2.morphologyEx(padded, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    mask = padded[k:-k, k:-k]
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return np.zeros(small.shape, bool), s
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == largest, s


def breast_bbox(img: np.ndarray, margin: float = 0.01, work_px: int = 512) -> Box:
    """Box ``(y0, x0, y1, x1)`` around the whole breast (skin line, nipple, pectoral muscle included).

    See :func:`breast_mask` for the method. The box is grown by ``margin`` of the image size on
    each side to keep the skin line that the opening may shave. If no breast is found (blank or
    constant image) the full image is returned with a warning; a valid image never raises.
    """
    if img.ndim != 2 or img.size == 0:
        raise ValueError(f"breast_bbox expects a non-empty 2-D array, got shape {img.shape}")
    mask, s = breast_mask(img, work_px)
    return _box_from_mask(mask, s, img.shape, margin)


def _box_from_mask(mask: np.ndarray, s: float, shape, margin: float) -> Box:
    h, w = shape
    if not mask.any() or mask.sum() < 0.005 * mask.size:
        log.warning("breast_bbox: no breast found in a %dx%d image; using the full image", h, w)
        return (0, 0, h, w)
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    my, mx = margin * h, margin * w
    y0 = int(np.floor(ys[0] / s - my))
    y1 = int(np.ceil((ys[-1] + 1) / s + my))
    x0 = int(np.floor(xs[0] / s - mx))
    x1 = int(np.ceil((xs[-1] + 1) / s + mx))
    return (max(0, y0), max(0, x0), min(h, y1), min(w, x1))


def apply_mask(img: np.ndarray, mask: np.ndarray, grow: float = 0.01) -> np.ndarray:
    """Zero everything outside the breast mask (grown by ``grow`` of the image size): removes burned-in
    labels and markers that fall inside the breast's bounding box. ``mask`` may be a downsampled one."""
    h, w = img.shape
    k = max(3, int(round(grow * max(mask.shape))) * 2 + 1)  # grown at the mask's (small) scale: cheap
    m = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    m = cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST)
    return img * m.astype(img.dtype)


def crop(img: np.ndarray, box: Box) -> np.ndarray:
    """Slice ``img`` to ``box`` (a view, no copy)."""
    y0, x0, y1, x1 = box
    if not (0 <= y0 < y1 <= img.shape[0] and 0 <= x0 < x1 <= img.shape[1]):
        raise ValueError(f"box {box} is empty or outside an image of shape {img.shape}")
    return img[y0:y1, x0:x1]


def breast_side(img: np.ndarray) -> str:
    """'left' or 'right': which half of the image holds more tissue (the chest-wall side)."""
    cols = img.sum(axis=0)
    half = len(cols) // 2
    return "left" if cols[:half].sum() >= cols[len(cols) - half:].sum() else "right"


def orient(img: np.ndarray, laterality: str | None = None) -> tuple[np.ndarray, bool]:
    """Flip horizontally so the chest wall is on the left. Returns (image, flipped).

    The side is measured from the pixels (machines do not all follow the display convention); the
    laterality is only a tie-breaker for a symmetric image (R breasts then get flipped).
    """
    cols = img.sum(axis=0, dtype=np.float64)
    half = len(cols) // 2
    left, right = cols[:half].sum(), cols[len(cols) - half:].sum()
    if abs(left - right) <= 1e-3 * max(left + right, 1e-9):
        flip = (laterality or "L").upper().startswith("R")
    else:
        flip = right > left
    return (np.ascontiguousarray(img[:, ::-1]) if flip else img), flip


def resize_pad(img: np.ndarray, size: tuple[int, int], keep_aspect: bool = True) -> np.ndarray:
    """Resize to ``size`` (H, W). With ``keep_aspect`` the image is scaled to fit and padded with 0
    at the bottom/right (top-left anchored, so the chest wall stays on the left edge)."""
    th, tw = size
    h, w = img.shape
    if not keep_aspect:
        interp = cv2.INTER_AREA if th * tw < h * w else cv2.INTER_LINEAR
        return cv2.resize(img, (tw, th), interpolation=interp)
    s = min(th / h, tw / w)
    nh, nw = max(1, min(th, round(h * s))), max(1, min(tw, round(w * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    small = cv2.resize(img, (nw, nh), interpolation=interp)
    out = np.zeros((th, tw), dtype=img.dtype)
    out[:nh, :nw] = small
    return out


def to_uint(img: np.ndarray, bits: int = 8) -> np.ndarray:
    """[0, 1] float -> uint8 (bits=8) or uint16 (bits=16), rounded."""
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    top = 255.0 if bits == 8 else 65535.0
    return np.rint(np.clip(img, 0.0, 1.0) * top).astype(np.uint8 if bits == 8 else np.uint16)


def from_uint(img: np.ndarray) -> np.ndarray:
    """uint8 / uint16 -> float32 in [0, 1]: the inverse of :func:`to_uint`."""
    top = 65535.0 if img.dtype == np.uint16 else 255.0
    return img.astype(np.float32) / np.float32(top)


def load_png(path) -> np.ndarray:
    """8- or 16-bit PNG -> float32 HxW in [0, 1]."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return from_uint(img[..., 0] if img.ndim == 3 else img)


def parse_size(text) -> tuple[int, int]:
    """'1024x512' -> (1024, 512); tuples/lists pass through."""
    if isinstance(text, (tuple, list)):
        return int(text[0]), int(text[1])
    try:
        h, w = str(text).lower().split("x")
        return int(h), int(w)
    except ValueError:
        raise ValueError(f"size must look like HxW, e.g. 1024x512; got {text!r}") from None


# --------------------------------------------------------------------------------------------------
# Per-file job
# --------------------------------------------------------------------------------------------------

@dataclass
class PreprocessConfig:
    """Everything that determines the output pixels; saved as preprocess.json beside the images."""

    size: tuple[int, int] = (1024, 512)
    keep_aspect: bool = True
    bits: int = 8
    crop: bool = True
    mask_outside: bool = True     # zero labels/markers inside the box but outside the breast
    orient: bool = True
    backend: str = "auto"
    reduced_decode: bool = True   # JPEG 2000: decode the coarsest wavelet level that covers `size`
    window_index: int = 0
    voi: bool = True

    def __post_init__(self):
        self.size = parse_size(self.size)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "PreprocessConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def preprocess_array(img: np.ndarray, cfg: PreprocessConfig, laterality: str | None = None):
    """crop -> orient -> resize/pad on an image from ``read_image``. Returns (float image, box, flipped)."""
    box = (0, 0, *img.shape)
    if cfg.crop or cfg.mask_outside:
        mask, s = breast_mask(img)
        if cfg.crop:
            box = _box_from_mask(mask, s, img.shape, 0.01)
        if cfg.mask_outside and mask.any():
            img = apply_mask(img, mask)
    out = crop(img, box)
    flipped = False
    if cfg.orient:
        out, flipped = orient(out, laterality)
    return resize_pad(out, cfg.size, cfg.keep_aspect), box, flipped


def preprocess_file(path, cfg: PreprocessConfig, laterality: str | None = None):
    """DICOM file -> (uint8/uint16 image of cfg.size, info dict for the manifest)."""
    from . import dicom

    d = dicom.read_dicom(path, backend=cfg.backend, min_size=cfg.size if cfg.reduced_decode else None,
                         window_index=cfg.window_index, voi=cfg.voi)
    img, box, flipped = preprocess_array(d.image, cfg, laterality)
    s = d.scale
    rows, cols = d.source_shape
    src_box = (int(box[0] * s), int(box[1] * s), min(rows, int(round(box[2] * s))), min(cols, int(round(box[3] * s))))
    info = dict(source_rows=rows, source_cols=cols, photometric=d.photometric,
                bits_stored=d.meta.get("BitsStored"), syntax=d.meta.get("TransferSyntaxUID"), voi=d.voi,
                backend=d.backend, decode_scale=s, bbox_y0=src_box[0], bbox_x0=src_box[1], bbox_y1=src_box[2],
                bbox_x1=src_box[3], flipped=flipped)
    return to_uint(img, cfg.bits), info


def write_png_atomic(path: Path, img: np.ndarray) -> None:
    """Write via a temp file and rename, so a killed run never leaves a truncated PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    if not cv2.imwrite(str(tmp), img, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError(f"could not write {tmp}")
    os.replace(tmp, path)


def _job(row: dict, dcm_path: str, out_dir: str, cfg: PreprocessConfig) -> dict:
    """Worker: never raises; returns a manifest row or an error row."""
    t0 = time.perf_counter()
    rel = f"{row['patient_id']}/{row['image_id']}.png"
    try:
        img, info = preprocess_file(dcm_path, cfg, row.get("laterality"))
        write_png_atomic(Path(out_dir) / rel, img)
    except Exception as exc:  # a batch job logs bad files and goes on
        return {"ok": False, "image_id": row["image_id"], "file": dcm_path, "error_type": type(exc).__name__,
                "message": str(exc)}
    return {"ok": True, **row, **info, "path": rel, "seconds": round(time.perf_counter() - t0, 4)}


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


def _run_tasks(tasks, out_dir: str, cfg: PreprocessConfig, jobs: int):
    """Yield job results in completion order. If a worker dies, the unfinished files run again one
    per process: the culprit is isolated and reported, every other file is still processed."""
    from joblib import Parallel, delayed
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    pending = {r["image_id"]: (r, p) for r, p in tasks}
    try:
        for res in Parallel(n_jobs=jobs, return_as="generator_unordered", batch_size=4)(
                delayed(_job)(r, p, out_dir, cfg) for r, p in tasks):
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
                 "difficult_negative_case", "prediction_id"]
ERROR_COLUMNS = ["image_id", "file", "error_type", "message"]


def _read_rows(path: Path, key: str = "image_id") -> pd.DataFrame:
    """Read a manifest written line by line; a torn last line (killed run) is dropped, duplicates too."""
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    df = pd.read_csv(path, on_bad_lines="skip", engine="python")
    if key in df:
        df = df[pd.to_numeric(df[key], errors="coerce").notna()]
        df[key] = df[key].astype("int64")
        df = df.drop_duplicates(key, keep="last")
    return df


def _write_csv_atomic(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


class _RowAppender:
    """Append dict rows to a CSV, flushing each line so a killed run loses at most one torn line."""

    def __init__(self, path: Path, columns: list[str]):
        new = not path.exists() or path.stat().st_size == 0
        self.columns = columns
        self.f = open(path, "a", newline="")
        self.w = csv.DictWriter(self.f, fieldnames=columns, extrasaction="ignore")
        if new:
            self.w.writeheader()

    def add(self, row: dict) -> None:
        self.w.writerow(row)
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def run_preprocess(data, split: str = "train", out=None, cfg: PreprocessConfig | None = None, jobs: int = 2,
                   limit: int | None = None, progress: bool = True) -> dict:
    """Preprocess ``<data>/<split>_images`` listed in ``<data>/<split>.csv`` into ``out``; resumable.

    Writes ``<out>/<patient_id>/<image_id>.png``, ``manifest.csv``, ``errors.csv`` and
    ``preprocess.json``. A rerun skips images whose manifest row and PNG exist, retries failures and
    regenerates missing PNGs. Returns a summary dict (counts, seconds, images/s).
    """
    from tqdm.auto import tqdm

    cfg = cfg or PreprocessConfig()
    data, out = Path(data), Path(out or Path(data) / f"{split}_{cfg.size[0]}x{cfg.size[1]}")
    table_path = data / f"{split}.csv"
    if not table_path.exists():
        raise FileNotFoundError(f"{table_path} not found: --data must be a folder with {split}.csv and {split}_images/")
    table = pd.read_csv(table_path)
    missing = [c for c in ID_COLUMNS if c not in table]
    if missing:
        raise ValueError(f"{table_path} lacks columns {missing}")
    if limit:
        table = table.head(int(limit))
    out.mkdir(parents=True, exist_ok=True)

    saved_cfg = out / "preprocess.json"
    if saved_cfg.exists():
        old = json.loads(saved_cfg.read_text()).get("config", {})
        if PreprocessConfig.from_json(old).to_json() != cfg.to_json():
            raise ValueError(f"{out} holds images made with other settings ({old}); use a new --out or delete it")
    saved_cfg.write_text(json.dumps({"config": cfg.to_json(), "data": str(data), "split": split}, indent=2,
                                    default=list))

    for stale in out.rglob(".*.tmp.png"):  # left by a worker killed mid-write
        stale.unlink(missing_ok=True)
    manifest_path, errors_path = out / "manifest.csv", out / "errors.csv"
    manifest = _read_rows(manifest_path)
    if len(manifest):
        manifest = manifest[[(out / p).exists() for p in manifest.path]]
        _write_csv_atomic(manifest, manifest_path)
    done = set(manifest.image_id) if len(manifest) else set()
    todo = table[~table.image_id.isin(done)]
    keep = [c for c in ID_COLUMNS + CARRY_COLUMNS if c in table]
    columns = keep + ["source_rows", "source_cols", "photometric", "bits_stored", "syntax", "voi", "backend",
                      "decode_scale", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1", "flipped", "path", "seconds"]
    if len(manifest) and list(manifest.columns) != columns:
        manifest = manifest.reindex(columns=columns)
        _write_csv_atomic(manifest, manifest_path)

    images_dir = data / f"{split}_images"
    tasks = [(r, str(images_dir / str(r["patient_id"]) / f"{r['image_id']}.dcm"))
             for r in todo[keep].to_dict("records")]
    t0 = time.perf_counter()
    rows, errors = _RowAppender(manifest_path, columns), []
    n_ok = 0
    try:
        results = _run_tasks(tasks, str(out), cfg, jobs)
        for res in tqdm(results, total=len(tasks), desc=f"preprocess {split}", unit="img", disable=not progress):
            if res.pop("ok"):
                rows.add(res)
                n_ok += 1
            else:
                log.warning("failed: %s: %s: %s", res["file"], res["error_type"], res["message"])
                errors.append(res)
    finally:
        rows.close()
        _write_csv_atomic(pd.DataFrame(errors, columns=ERROR_COLUMNS), errors_path)
        _write_csv_atomic(_read_rows(manifest_path), manifest_path)
    seconds = time.perf_counter() - t0
    summary = dict(split=split, out=str(out), total=len(table), skipped=len(table) - len(tasks), processed=n_ok,
                   failed=len(errors), seconds=round(seconds, 2),
                   images_per_second=round(len(tasks) / seconds, 2) if tasks and seconds > 0 else None)
    log.info("preprocess summary: %s", summary)
    return summary


def read_manifest(out) -> pd.DataFrame:
    """The manifest of a preprocessing output folder (absolute PNG paths in ``abs_path``)."""
    out = Path(out)
    df = pd.read_csv(out / "manifest.csv")
    df["abs_path"] = [str(out / p) for p in df.path]
    return df


def read_config(out) -> PreprocessConfig:
    """The settings an output folder was made with (so inference repeats them exactly)."""
    return PreprocessConfig.from_json(json.loads((Path(out) / "preprocess.json").read_text())["config"])


def load_before_after(data, split: str, out, rows: pd.DataFrame, display_px: int = 384):
    """Source image (reduced for display) with the crop box, and the written PNG, for manifest rows."""
    from .dicom import read_dicom
    from .eda import image_path

    before, boxes, after, titles = [], [], [], []
    for r in rows.itertuples():
        d = read_dicom(image_path(data, split, r.patient_id, r.image_id), min_size=(display_px, display_px // 2))
        s = d.scale
        before.append(d.image)
        boxes.append((r.bbox_y0 / s, r.bbox_x0 / s, r.bbox_y1 / s, r.bbox_x1 / s))
        after.append(load_png(Path(out) / r.path))
        titles.append(f"machine {r.machine_id} {r.laterality}-{r.view} {r.photometric}")
    return before, boxes, after, titles

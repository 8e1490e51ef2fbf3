"""Exploratory data analysis helpers: tables of labels and of DICOM headers (no pixels)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def read_table(data, split: str = "train") -> pd.DataFrame:
    """``<data>/<split>.csv`` with the breast id (``prediction_id``) added."""
    path = Path(data) / f"{split}.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: point `data_dir` at a folder in the RSNA layout")
    from .metrics import with_prediction_id

    return with_prediction_id(pd.read_csv(path))


def image_path(data, split: str, patient_id, image_id) -> Path:
    return Path(data) / f"{split}_images" / str(patient_id) / f"{image_id}.dcm"


def _header_row(path: str) -> dict:
    from .dicom import DicomReadError, read_metadata

    try:
        return read_metadata(path)
    except DicomReadError as exc:
        return {"path": path, "error": exc.reason}


def scan_headers(data, split: str = "train", cache=None, jobs: int = 2, limit: int | None = None,
                 progress: bool = True) -> tuple[pd.DataFrame, float]:
    """DICOM header fields for every image of a split, joined to the csv; cached to ``cache``.

    Returns (table, files per second of the scan; 0.0 when the cache answered). The cache is
    reused only if it covers the same image ids.
    """
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    df = read_table(data, split)
    if limit:
        df = df.head(int(limit))
    cache = Path(cache) if cache else None
    if cache and cache.exists():
        cached = pd.read_csv(cache)
        if set(cached.image_id) == set(df.image_id):
            return cached, 0.0
    paths = [str(image_path(data, split, p, i)) for p, i in zip(df.patient_id, df.image_id)]
    t0 = time.perf_counter()
    rows = Parallel(n_jobs=jobs, batch_size=64)(
        delayed(_header_row)(p) for p in tqdm(paths, desc="headers", unit="file", disable=not progress))
    rate = len(paths) / max(time.perf_counter() - t0, 1e-9)
    headers = pd.DataFrame(rows)
    headers["image_id"] = df.image_id.to_numpy()
    out = df.merge(headers.drop(columns=["path"]), on="image_id", how="left")
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        out.to_csv(cache, index=False)
    return out, rate


def header_summary(headers: pd.DataFrame) -> pd.DataFrame:
    """Per machine: image count, sizes, bit depths, photometric, transfer syntax, VOI LUT function."""
    def uniq(s):
        vals = sorted({str(v) for v in s.dropna()})
        return ", ".join(vals) if vals else "-"

    h = headers.copy()
    h["size"] = h.Rows.astype("Int64").astype(str) + "x" + h.Columns.astype("Int64").astype(str)
    return h.groupby("machine_id").agg(
        images=("image_id", "size"), sizes=("size", uniq), bits_stored=("BitsStored", uniq),
        photometric=("PhotometricInterpretation", uniq), transfer_syntax=("TransferSyntaxUID", uniq),
        voi_lut_function=("VOILUTFunction", uniq), n_windows=("WindowCenter", lambda s: uniq(
            s.astype(str).str.count(r"\\") + 1)))


def class_balance(df: pd.DataFrame, by: str) -> pd.DataFrame:
    """Images, cancer images and cancer rate per value of ``by``."""
    g = df.groupby(by, dropna=False)
    out = pd.DataFrame({"images": g.size(), "cancer": g.cancer.sum()})
    out["rate"] = out.cancer / out.images
    return out


def breast_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per breast: label = any cancer image."""
    return df.groupby("prediction_id").agg(patient_id=("patient_id", "first"), site_id=("site_id", "first"),
                                           machine_id=("machine_id", "first"), cancer=("cancer", "max"),
                                           images=("image_id", "size")).reset_index()


def _read_one(path: str) -> dict:
    from .dicom import DicomReadError, read_dicom

    try:
        d = read_dicom(path)
        return {"ok": True, "photometric": d.photometric, "voi": d.voi.split("(")[0], "backend": d.backend,
                "syntax": d.meta.get("TransferSyntaxUID"), "mean": float(d.image.mean())}
    except DicomReadError as exc:
        log.warning("%s", exc)
        return {"ok": False, "photometric": None, "voi": None, "backend": None, "syntax": None, "mean": np.nan}


def read_all_images(data, jobs: int = 2, progress: bool = True) -> pd.DataFrame:
    """Decode every image of train and test; counts per transfer syntax / photometric / VOI / backend."""
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    paths = []
    for split in ("train", "test"):
        if (Path(data) / f"{split}.csv").exists():
            df = read_table(data, split)
            paths += [str(image_path(data, split, p, i)) for p, i in zip(df.patient_id, df.image_id)]
    t0 = time.perf_counter()
    rows = Parallel(n_jobs=jobs, batch_size=8)(delayed(_read_one)(p) for p in tqdm(paths, desc="decode", unit="img",
                                                                                       disable=not progress))
    seconds = time.perf_counter() - t0
    res = pd.DataFrame(rows)
    summary = res.groupby(["syntax", "photometric", "voi", "backend"], dropna=False).agg(
        images=("ok", "size"), mean_intensity=("mean", "mean")).reset_index()
    summary["failed"] = 0
    failed = int((~res.ok).sum())
    if failed:
        summary.loc[len(summary)] = [None, None, None, None, failed, np.nan, failed]
    print(f"decoded {int(res.ok.sum())}/{len(res)} images in {seconds:.1f} s ({len(res) / seconds:.1f} img/s)")
    return summary


def gallery_sample(df: pd.DataFrame, by=("machine_id",), per_group: int = 2, seed: int = 0) -> pd.DataFrame:
    """``per_group`` rows of each group (cancer images first, so lesions show), drawn with ``seed``."""
    parts = []
    for _, g in df.groupby(list(by)):
        g = g.sample(frac=1.0, random_state=seed)
        if "cancer" in g:
            g = g.sort_values("cancer", ascending=False, kind="stable")
        parts.append(g.head(per_group))
    return pd.concat(parts).reset_index(drop=True)


def load_gallery(data, split: str, rows: pd.DataFrame, display_px: int = 384):
    """For each row: the stored values stretched min-max (what a naive reader shows) and the
    ``read_image`` result, both decoded at a reduced size for display, with a title."""
    from .dicom import read_dicom

    raw, shown, titles = [], [], []
    for r in rows.itertuples():
        path = image_path(data, split, r.patient_id, r.image_id)
        naive = read_dicom(path, min_size=(display_px, display_px // 2), voi=False, invert_monochrome1=False,
                           padding_to_background=False)
        good = read_dicom(path, min_size=(display_px, display_px // 2))
        raw.append(naive.image)
        shown.append(good.image)
        titles.append(f"machine {r.machine_id} {r.laterality}-{r.view} cancer={getattr(r, 'cancer', '?')}\n"
                      f"{good.photometric} {good.voi.split('(')[0]}")
    return raw, shown, titles

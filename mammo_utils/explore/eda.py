"""Exploratory data analysis helpers: tables of labels and of DICOM headers (no pixels)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import paths
from ..tables import read_csv, read_table, sources

log = logging.getLogger(__name__)


def dataset_line(df: pd.DataFrame) -> str:
    """One line: images, patients, breasts and cancer images of a split table."""
    line = f"{len(df):,} images, {df.patient_id.nunique():,} patients, {df.prediction_id.nunique():,} breasts"
    if "cancer" in df:
        line += f", {int(df.cancer.sum()):,} cancer images ({df.cancer.mean():.2%})"
    return line


def scan_line(headers: pd.DataFrame, rate: float) -> str:
    """One line about a header scan: its speed (or the cache) and unreadable files."""
    line = f"header scan: {rate:,.0f} files/s" if rate else "header scan: loaded from the cache"
    if "error" in headers:
        line += f"; unreadable headers: {int(headers.error.notna().sum())}"
    return line


def _header_row(path: str) -> dict:
    from ..dicom import DicomReadError, read_metadata

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

    from ..progress import bar

    df = read_table(data, split)
    if limit:
        df = df.head(int(limit))
    cache = Path(cache) if cache else None
    if cache and cache.exists():
        cached = read_csv(cache)
        if set(cached.image_id) == set(df.image_id):
            return cached, 0.0
    files = [str(paths.dicom_path(data, split, p, i)) for p, i in zip(df.patient_id, df.image_id)]
    t0 = time.perf_counter()
    from ..parallel import resolve_jobs

    rows = Parallel(n_jobs=resolve_jobs(jobs), batch_size=64)(
        delayed(_header_row)(p) for p in bar(files, desc="headers", unit="file", disable=not progress))
    rate = len(files) / max(time.perf_counter() - t0, 1e-9)
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

    from ..dicom.read import META_KEYWORDS

    h = headers.reindex(columns=list(dict.fromkeys([*headers.columns, *META_KEYWORDS, "TransferSyntaxUID"])))
    # every file of a machine unreadable: its columns stay empty ("-"), the errors are in the `error` column
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
    extra = {c: (c, "first") for c in ("site_id", "machine_id", "source") if c in df}
    return df.groupby("prediction_id").agg(patient_id=("patient_id", "first"), **extra, cancer=("cancer", "max"),
                                           images=("image_id", "size")).reset_index()


def by_source(df: pd.DataFrame) -> pd.DataFrame:
    """Per source: images, patients, breasts, cancer breasts and their rate, median age, views, the
    official split and what is missing (ages, density): every count a combined dataset is read by."""
    df = df.assign(source=sources(df))
    g = df.groupby("source")
    breasts = breast_table(df).groupby("source").cancer
    out = pd.DataFrame({"images": g.size(), "patients": g.patient_id.nunique(), "breasts": breasts.size(),
                        "cancer_breasts": breasts.sum()})
    out["breast_rate"] = out.cancer_breasts / out.breasts
    out["median_age"] = g.age.median() if "age" in df else float("nan")
    out["age_missing"] = g.age.apply(lambda a: a.isna().mean()) if "age" in df else 1.0
    if "density" in df:
        out["density_missing"] = g.density.apply(lambda d: d.fillna("").astype(str).eq("").mean())
    out["views"] = g.view.apply(lambda v: ", ".join(f"{k} {n}" for k, n in v.value_counts().items()))
    if "official_split" in df:
        out["official_test"] = g.official_split.apply(lambda s: int((s == "test").sum()))
    return out


def _read_one(path: str) -> dict:
    from ..dicom import DicomReadError, read_dicom

    try:
        d = read_dicom(path)
        return {"path": path, "ok": True, "photometric": d.photometric, "voi": d.voi.split("(")[0],
                "backend": d.backend, "syntax": d.meta.get("TransferSyntaxUID"), "mean": float(d.image.mean()),
                "error": None}
    except DicomReadError as exc:
        return {"path": path, "ok": False, "photometric": None, "voi": None, "backend": None, "syntax": None,
                "mean": np.nan, "error": exc.reason}


def read_all_images(data, jobs: int = 2, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Decode every image of train and test once.

    Returns (summary, failures): decoded images counted per transfer syntax / photometric / VOI /
    backend, and one row per file that failed with its reason.
    """
    from joblib import Parallel, delayed

    from ..parallel import resolve_jobs, shutdown_local_pool
    from ..progress import bar

    files = []
    for split in ("train", "test"):
        if paths.split_csv(data, split).exists():
            df = read_table(data, split)
            files += [str(paths.dicom_path(data, split, p, i)) for p, i in zip(df.patient_id, df.image_id)]
    if not files:
        raise FileNotFoundError(f"{data} has neither train.csv nor test.csv")
    t0 = time.perf_counter()
    try:
        rows = Parallel(n_jobs=resolve_jobs(jobs), batch_size=8)(
            delayed(_read_one)(p) for p in bar(files, desc="decode", unit="img", disable=not progress))
    finally:
        shutdown_local_pool()
    seconds = time.perf_counter() - t0
    res = pd.DataFrame(rows)
    ok = res[res.ok]
    summary = ok.groupby(["syntax", "photometric", "voi", "backend"], dropna=False).agg(
        images=("ok", "size"), mean_intensity=("mean", "mean")).reset_index()
    failures = res.loc[~res.ok, ["path", "error"]].reset_index(drop=True)
    print(f"decoded {len(ok)}/{len(res)} images in {seconds:.1f} s ({len(res) / seconds:.1f} img/s); "
          f"{len(failures)} failed")
    return summary, failures


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
    ``read_image`` result, both decoded at a reduced size for display, with a title. A file that cannot
    be read is left out and named (as preprocessing does), so one bad file never stops the notebook."""
    from ..dicom import DicomReadError, read_dicom

    raw, shown, titles = [], [], []
    for r in rows.itertuples():
        path = paths.dicom_path(data, split, r.patient_id, r.image_id)
        try:
            naive = read_dicom(path, min_size=(display_px, display_px // 2), voi=False, invert_monochrome1=False,
                               padding_to_background=False)
            good = read_dicom(path, min_size=(display_px, display_px // 2))
        except (DicomReadError, OSError) as exc:
            log.warning("gallery: left out %s: %s", path, exc)
            print(f"left out of the gallery: {exc}")
            continue
        raw.append(naive.image)
        shown.append(good.image)
        titles.append(f"machine {r.machine_id} {r.laterality}-{r.view} cancer={getattr(r, 'cancer', '?')}\n"
                      f"{good.photometric} {good.voi.split('(')[0]}")
    return raw, shown, titles

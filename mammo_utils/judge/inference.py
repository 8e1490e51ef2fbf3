"""Test-time pipeline: DICOM -> the run's own preprocessing -> model ensemble -> submission.csv.

Streaming: DICOMs are decoded and preprocessed inside DataLoader workers, batch by batch, so memory
does not grow with the size of the test set (or, with a Dask ``scheduler``, preprocessed on the
cluster first). A file that fails to decode is logged; its breast is predicted from its other
images, or from the training prevalence if it has none: the submission never misses a row.

Ensembling rules (several checkpoints, e.g. one per fold):

* every checkpoint must have been trained on the same preprocessing (``preprocess.json``), or
  :func:`load_ensemble` raises: one test image is preprocessed once, for all models;
* every checkpoint must aggregate per breast the same way (mean or max), or it raises;
* probabilities are the mean over models (and TTA views); the decision threshold is the mean of
  the models' thresholds: the run's decision (notebook 05, chosen out of fold) where it was chosen on
  these very checkpoints, else each fold's own; the fallback prevalence is the data's breast prevalence
  (the whole folds.csv, before undersampling) the checkpoints record.
"""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from .. import paths
from ..errors import UserError
from ..learn.checkpoint import load_model
from ..learn.engine import predict_loader, resolve_amp
from ..learn.runs import Run, file_fingerprint
from ..metrics import aggregate_breasts
from ..prepare.manifest import check_writable
from ..prepare.png import from_uint, load_png
from ..prepare.preprocess import PreprocessConfig, preprocess_file
from ..tables import read_table, with_prediction_id

log = logging.getLogger(__name__)
MAX_FAILED = 0.05  # share of test images allowed to fail before predict reports failure


class DicomDataset(Dataset):
    """Rows of test.csv -> (image tensor 1xHxW, {"index", "ok"}), preprocessing exactly as in training."""

    def __init__(self, df: pd.DataFrame, data, split: str, cfg: PreprocessConfig):
        self.df = df.reset_index(drop=True)
        self.data, self.split, self.cfg = Path(data), split, cfg

    def __len__(self) -> int:
        return len(self.df)

    def path(self, i: int) -> Path:
        r = self.df.iloc[i]
        return paths.dicom_path(self.data, self.split, r.patient_id, r.image_id)

    def __getitem__(self, i: int):
        try:
            img, _ = preprocess_file(self.path(i), self.cfg, self.df.laterality.iloc[i])
            x, ok = torch.from_numpy(from_uint(img))[None], True
        except Exception as exc:  # noqa: BLE001 - logged; the breast is predicted from its other images
            log.warning("test image failed: %s: %s", self.path(i), exc)
            x, ok = torch.zeros(1, *self.cfg.size), False
        return x, {"index": torch.tensor(i), "ok": torch.tensor(ok)}


class PngDataset(Dataset):
    """Preprocessed PNGs (a manifest made on a cluster) -> the same samples as :class:`DicomDataset`."""

    def __init__(self, df: pd.DataFrame, png_paths: dict, size):
        self.df, self.png_paths, self.size = df.reset_index(drop=True), png_paths, size

    def __len__(self) -> int:
        return len(self.df)

    def __getitem__(self, i: int):
        path = self.png_paths.get(str(self.df.image_id.iloc[i]))
        if path is None:
            return torch.zeros(1, *self.size), {"index": torch.tensor(i), "ok": torch.tensor(False)}
        return torch.from_numpy(load_png(path))[None], {"index": torch.tensor(i), "ok": torch.tensor(True)}


def model_samples(images: Dataset, df: pd.DataFrame, models) -> Dataset:
    """What the ensemble reads from an image dataset: the images with the metadata its models encode,
    or (breast-level fusion) the breasts they make up. ``image_predictions`` maps the samples'
    predictions back to the rows of ``df``."""
    from ..learn.data import BreastViews, WithExtras

    fusions = {getattr(m, "fusion", "none") for m in models}
    if len(fusions) > 1:
        raise UserError(f"the checkpoints mix breast-level fusion modes {sorted(fusions)}: ensemble models that "
                        f"read the same samples (one fusion setting)")
    meta = sorted({c for m in models if getattr(m, "meta", None) is not None for c in m.meta.spec})
    missing = [c for c in meta if c not in df]
    if missing:  # predicted as a missing value, which every encoder has a slot for
        log.warning("the table to predict has no %s column(s): the models read them as missing", missing)
    if fusions == {"none"}:
        return WithExtras(images, df, meta)
    return BreastViews(images, df, meta)


def find_checkpoints(run_dirs) -> list[Path]:
    """The current best.pt of the given run folders (a run, a folder of fold runs, one fold run), or
    checkpoint files given directly. A run's folds are read by :class:`~mammo_utils.learn.runs.Run`:
    outputs set aside (``previous/``) and folds of another recipe are never included."""
    found = []
    for r in map(Path, run_dirs):
        if r.is_file():
            found.append(r)
        elif (r / paths.BEST).is_file():
            found.append(r / paths.BEST)
        else:
            found += Run(r).checkpoints()
    if not found:
        raise UserError(f"no {paths.BEST} checkpoint under {[str(r) for r in run_dirs]}: train first (notebook 04)")
    return found


def decision_settings(ckpt_path: Path, ckpt: dict) -> tuple[float, str]:
    """Threshold and aggregation: the evaluation notebook's choice over training's, where that choice
    was made with this very checkpoint (a fold of a run: the run's current decision, see
    :meth:`~mammo_utils.learn.runs.Run.decision`; a lone folder: its threshold.json)."""
    ckpt_path = Path(ckpt_path)
    folder, mine = ckpt_path.parent, file_fingerprint(ckpt_path)
    saved = None
    if re.fullmatch(r"fold\d+", folder.name):
        saved = Run(folder.parent).decision()
        if saved and saved.get("checkpoints") is not None and mine not in saved["checkpoints"].values():
            saved = None
    elif (folder / paths.THRESHOLD).exists():
        saved = json.loads((folder / paths.THRESHOLD).read_text())
        saved = saved if saved.get("checkpoint") in (None, mine) else None
    if saved:
        return float(saved["threshold"]), saved.get("aggregate", "mean")
    return float(ckpt.get("threshold", 0.5)), ckpt.get("aggregate", ckpt.get("config", {}).get("aggregate", "mean"))


@dataclass
class Ensemble:
    models: list
    preprocess: PreprocessConfig
    threshold: float
    aggregate: str
    prevalence: float
    checkpoints: list
    amp: str = "auto"        # the precision the run trained with, used to predict too
    batch_size: int = 16     # the run's validation batch (twice its training batch)
    workers: int = 2         # the run's DataLoader processes


def load_ensemble(checkpoints, device) -> Ensemble:
    """Models of every checkpoint plus the shared decision rule; see the module docstring for the rules."""
    models, thresholds, aggregates, prevalences, pre = [], [], [], [], None
    for path in map(Path, checkpoints):
        model, ckpt = load_model(path, device)
        cfg = PreprocessConfig.from_json(ckpt["preprocess"]) if ckpt.get("preprocess") else PreprocessConfig()
        if pre is not None and cfg.to_json() != pre.to_json():
            raise UserError(f"{path} was trained on other preprocessing ({cfg}) than {checkpoints[0]} ({pre}); "
                            "ensemble runs that share preprocess.json")
        thr, agg = decision_settings(path, ckpt)
        if aggregates and agg != aggregates[0]:
            raise UserError(f"{path} aggregates breasts by {agg!r}, {checkpoints[0]} by {aggregates[0]!r}: "
                            "re-run notebook 05 with one aggregation for every fold")
        pre = cfg
        models.append(model)
        thresholds.append(thr)
        aggregates.append(agg)
        # the data's breast prevalence (older checkpoints: the sampled training rows')
        prevalences.append(float(ckpt.get("data_breast_prevalence", ckpt.get("train_breast_prevalence", 0.02))))
    run_cfg = ckpt.get("config", {})
    return Ensemble(models, pre, float(np.mean(thresholds)), aggregates[0], float(np.mean(prevalences)),
                    [str(c) for c in checkpoints], amp=run_cfg.get("amp", "auto"),
                    batch_size=2 * int(run_cfg.get("batch_size", 8)), workers=int(run_cfg.get("workers", 2)))


def predict_images(df: pd.DataFrame, data, split: str, ens: Ensemble, jobs: int = 2, batch_size: int | None = None,
                   tta: bool = False, device=None, progress: bool = True, scheduler: str | None = None,
                   work_dir=None, preprocessed_dir=None) -> tuple[pd.DataFrame, dict]:
    """Image-level probabilities (NaN for files that failed), averaged over models and TTA views.

    With a ``scheduler`` or a ``preprocessed_dir``, the images are first preprocessed into PNGs (on the
    cluster; resumable, so a folder shared by several runs is filled once), then predicted from them.
    """
    from ..parallel import resolve_jobs

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp_dtype = resolve_amp(ens.amp, device)  # the precision the run trained with
    if scheduler or preprocessed_dir:
        from ..prepare.runner import run_preprocess
        from ..tables import read_manifest

        out = Path(preprocessed_dir) if preprocessed_dir else Path(work_dir) / f"preprocessed_{split}"
        run_preprocess(data, split, out, ens.preprocess, jobs=jobs, progress=progress, scheduler=scheduler)
        manifest = read_manifest(out)
        ds = PngDataset(df, dict(zip(manifest.image_id.astype(str), manifest.abs_path)), ens.preprocess.size)
        workers = min(2, resolve_jobs(jobs))
    else:
        ds = DicomDataset(df, data, split, ens.preprocess)
        workers = resolve_jobs(jobs) if jobs else 0
    ens.models = [m.to(device) for m in ens.models]
    samples = model_samples(ds, df, ens.models)
    loader = DataLoader(samples, batch_size=batch_size or ens.batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None)
    t0 = time.perf_counter()
    preds = samples.image_predictions(predict_loader(ens.models, loader, len(samples), device, amp_dtype, tta=tta,
                                                     progress=progress))
    seconds = time.perf_counter() - t0
    out = df.reset_index(drop=True).assign(pred=preds)
    settings = dict(threshold=ens.threshold, aggregate=ens.aggregate, prevalence=ens.prevalence, seconds=seconds,
                    images_per_second=len(ds) / seconds if seconds else float("nan"),
                    failed=int(np.isnan(preds).sum()), images=len(ds), models=len(ens.models))
    return out, settings


def make_submission(image_preds: pd.DataFrame, settings: dict, order=None, binarize: bool = True) -> pd.DataFrame:
    """Per-breast aggregation -> threshold (or probabilities) -> one row per prediction_id, in ``order``."""
    df = with_prediction_id(image_preds)
    per_breast = aggregate_breasts(df, how=settings.get("aggregate", "mean")).set_index("prediction_id").pred  # NaN skipped
    order = list(order) if order is not None else list(df.prediction_id.drop_duplicates())
    probs = per_breast.reindex(order)
    fallback = probs.isna()
    if fallback.any():
        log.warning("%d breast(s) had no readable image: predicted with the data's breast prevalence %.4f",
                    int(fallback.sum()), settings["prevalence"])
    probs = probs.fillna(settings["prevalence"])
    cancer = (probs >= settings["threshold"]).astype(float) if binarize else probs.clip(0, 1)
    if binarize:
        cancer[fallback] = settings["prevalence"]  # no image: the prior, not a hard 0
    return pd.DataFrame({"prediction_id": order, "cancer": cancer.to_numpy()})


def submission_order(df: pd.DataFrame, data, csv_name: str) -> list:
    """Breasts of the CSV being predicted, in sample_submission.csv's order when it exists (they must agree)."""
    breasts = list(with_prediction_id(df).prediction_id.drop_duplicates())
    sample_path = paths.sample_submission(data)
    if not sample_path.exists():
        return breasts
    sample = pd.read_csv(sample_path, dtype={"prediction_id": str})
    if "prediction_id" not in sample:
        raise UserError(f"{sample_path} has no prediction_id column")
    extra, missing = set(sample.prediction_id) - set(breasts), set(breasts) - set(sample.prediction_id)
    if extra or missing:
        raise UserError(f"{sample_path} and {csv_name} list different breasts ({len(missing)} only in {csv_name}, "
                        f"{len(extra)} only in the sample, e.g. {sorted(missing or extra)[:3]}): predict the split "
                        f"the sample submission belongs to")
    return list(sample.prediction_id)


def predict(data, split: str, run_dirs, out=None, jobs: int = 2, tta: bool = False, binarize: bool = True,
            batch_size: int | None = None, device=None, progress: bool = True, scheduler: str | None = None,
            max_failed: float = MAX_FAILED, preprocessed_dir=None) -> tuple[pd.DataFrame, dict]:
    """``<data>/<split>.csv`` + images -> (submission DataFrame, report); written to ``out`` when given.

    The report has ``failed_share`` and ``ok`` (False when more than ``max_failed`` of the images
    failed); the submission is complete and written either way.
    """
    df = read_table(data, split)
    order = submission_order(df, data, paths.split_csv(data, split).name)
    if out:
        check_writable(Path(out).parent)
    ens = load_ensemble(find_checkpoints(run_dirs), device or "cpu")
    work_dir = Path(out).parent if out else Path(".")
    preds, settings = predict_images(df, data, split, ens, jobs, batch_size, tta, device, progress, scheduler, work_dir,
                                     preprocessed_dir)
    sub = make_submission(preds, settings, order, binarize)
    share = settings["failed"] / max(1, settings["images"])
    report = {**settings, "breasts": len(sub), "failed_share": share, "max_failed": max_failed,
              "ok": share <= max_failed}
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        sub.to_csv(out, index=False)
        preds.to_csv(paths.image_predictions_csv(out), index=False)
        record = {"checkpoints": {str(c): file_fingerprint(c) for c in ens.checkpoints}, "binarize": binarize,
                  **{k: settings[k] for k in ("threshold", "aggregate", "prevalence", "images", "failed", "models")}}
        paths.submission_record(out).write_text(json.dumps(record, indent=2))
        log.info("submission %s: %d breasts, %d failed images, %.1f img/s", out, len(sub), settings["failed"],
                 settings["images_per_second"])
    if not report["ok"]:
        log.error("%d of %d images (%.1f%%) failed, more than max_failed=%.1f%%: the submission is complete but "
                  "those breasts carry the prevalence", settings["failed"], settings["images"], 100 * share,
                  100 * max_failed)
    return sub, report


def report_line(sub: pd.DataFrame, report: dict, out=None) -> str:
    """One line about a finished prediction: rows, positives, failures and whether they were too many."""
    verdict = "ok" if report["ok"] else f"TOO MANY FAILURES (more than {report['max_failed']:.0%})"
    return (f"{out or 'submission'}: {len(sub)} breasts, {int((sub.cancer >= 0.5).sum())} predicted cancer; "
            f"{report['failed']} of {report['images']} images failed: {verdict}; {report['images_per_second']:.1f} img/s")

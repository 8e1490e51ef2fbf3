"""Test-time pipeline: DICOM -> the run's own preprocessing -> model ensemble -> submission.csv.

Streaming: DICOMs are decoded and preprocessed inside DataLoader workers, batch by batch, so memory
does not grow with the size of the test set. A file that fails to decode is logged; its breast is
predicted from its other images, or from the training prevalence if it has none: the submission
never misses a row.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from .metrics import with_prediction_id
from .preprocess import PreprocessConfig, from_uint, preprocess_file
from .train import autocast, load_model, resolve_amp

log = logging.getLogger(__name__)


class DicomDataset(Dataset):
    """Rows of test.csv -> (image tensor 1xHxW, index, ok flag), preprocessing exactly as in training."""

    def __init__(self, df: pd.DataFrame, images_dir, cfg: PreprocessConfig, in_chans: int = 1):
        self.df = df.reset_index(drop=True)
        self.images_dir, self.cfg, self.in_chans = Path(images_dir), cfg, in_chans

    def __len__(self) -> int:
        return len(self.df)

    def path(self, i: int) -> Path:
        r = self.df.iloc[i]
        return self.images_dir / str(r.patient_id) / f"{r.image_id}.dcm"

    def __getitem__(self, i: int):
        r = self.df.iloc[i]
        try:
            img, _ = preprocess_file(self.path(i), self.cfg, r.laterality)
            x = torch.from_numpy(from_uint(img))[None]
            ok = True
        except Exception as exc:  # logged and predicted from the breast's other images
            log.warning("test image failed: %s: %s", self.path(i), exc)
            x, ok = torch.zeros(1, *self.cfg.size), False
        if self.in_chans != 1:
            x = x.expand(self.in_chans, -1, -1).contiguous()
        return x, i, ok


def find_checkpoints(run_dirs) -> list[Path]:
    """best.pt files in the given run folders (a fold run, or a folder of fold runs), or given directly."""
    found = []
    for r in map(Path, run_dirs):
        if r.is_file():
            found.append(r)
        elif (r / "best.pt").exists():
            found.append(r / "best.pt")
        else:
            found += sorted(r.rglob("best.pt"))
    if not found:
        raise FileNotFoundError(f"no best.pt checkpoint under {[str(r) for r in run_dirs]}")
    return found


def decision_settings(ckpt_path: Path, ckpt: dict) -> tuple[float, str]:
    """Threshold and aggregation: the evaluation notebook's choice (threshold.json) over training's."""
    chosen = ckpt_path.parent / "threshold.json"
    if chosen.exists():
        d = json.loads(chosen.read_text())
        return float(d["threshold"]), d.get("aggregate", "mean")
    return float(ckpt.get("threshold", 0.5)), ckpt.get("aggregate", "mean")


def predict_images(df: pd.DataFrame, images_dir, checkpoints: list[Path], jobs: int = 2, batch_size: int = 16,
                   tta: bool = False, device=None, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Image-level probabilities (NaN for files that failed) averaged over models; plus settings."""
    from tqdm.auto import tqdm

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    models, thresholds, aggregates, pre = [], [], [], None
    for path in checkpoints:
        model, ckpt = load_model(path, device)
        cfg = PreprocessConfig.from_json(ckpt["preprocess"]) if ckpt.get("preprocess") else PreprocessConfig()
        if pre is not None and cfg.to_json() != pre.to_json():
            raise ValueError(f"{path} was trained on other preprocessing ({cfg}) than {checkpoints[0]} ({pre}); "
                             "ensemble runs that share preprocess.json")
        pre = cfg
        thr, agg = decision_settings(path, ckpt)
        models.append(model)
        thresholds.append(thr)
        aggregates.append(agg)
        in_chans = ckpt["model_args"].get("in_chans", 1)
        prevalence = ckpt.get("train_breast_prevalence", 0.02)
    amp_dtype = resolve_amp("auto", device)
    ds = DicomDataset(df, images_dir, pre, in_chans)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=jobs, pin_memory=device.type == "cuda",
                        persistent_workers=False, prefetch_factor=4 if jobs else None)
    preds = np.full(len(ds), np.nan, dtype=np.float64)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x, idx, ok in tqdm(loader, desc="predict", unit="batch", disable=not progress):
            x = x.to(device, non_blocking=True)
            p = torch.zeros(x.shape[0], device=device)
            for m in models:
                with autocast(device, amp_dtype):
                    p += torch.sigmoid(m(x)["cancer"].float())
                    if tta:
                        p += torch.sigmoid(m(torch.flip(x, dims=[2]))["cancer"].float())
            p /= len(models) * (2 if tta else 1)
            p = p.cpu().numpy()
            ok = ok.numpy().astype(bool)
            preds[idx.numpy()[ok]] = p[ok]
    seconds = time.perf_counter() - t0
    out = df.reset_index(drop=True).assign(pred=preds)
    settings = dict(threshold=float(np.mean(thresholds)), aggregate=aggregates[0], prevalence=prevalence,
                    seconds=seconds, images_per_second=len(ds) / seconds if seconds else float("nan"),
                    failed=int(np.isnan(preds).sum()), models=len(models))
    return out, settings


def make_submission(image_preds: pd.DataFrame, settings: dict, order=None, binarize: bool = True) -> pd.DataFrame:
    """Per-breast aggregation -> threshold (or probabilities) -> one row per prediction_id, in ``order``."""
    df = with_prediction_id(image_preds)
    how = settings.get("aggregate", "mean")
    per_breast = df.groupby("prediction_id", sort=False).pred.agg(how)  # NaN (failed) images are skipped
    missing = per_breast.isna()
    if missing.any():
        log.warning("%d breast(s) had no readable image: predicted with the training prevalence %.4f",
                    int(missing.sum()), settings["prevalence"])
    order = list(order) if order is not None else list(df.prediction_id.drop_duplicates())
    probs = per_breast.reindex(order)
    fallback = probs.isna()
    probs = probs.fillna(settings["prevalence"])
    cancer = (probs >= settings["threshold"]).astype(float) if binarize else probs.clip(0, 1)
    if binarize:
        cancer[fallback] = settings["prevalence"]  # no image: the prior, not a hard 0
    return pd.DataFrame({"prediction_id": order, "cancer": cancer.to_numpy()})


def predict(csv, images_dir, run_dirs, out=None, jobs: int = 2, tta: bool = False, binarize: bool = True,
            batch_size: int = 16, device=None, progress: bool = True) -> pd.DataFrame:
    """test.csv + test_images -> submission DataFrame (written to ``out`` when given)."""
    csv = Path(csv)
    df = pd.read_csv(csv)
    sample = csv.parent / "sample_submission.csv"
    order = pd.read_csv(sample).prediction_id if sample.exists() else None
    if order is not None and "prediction_id" in df and set(order) != set(df.prediction_id):
        log.warning("sample_submission.csv and %s list different breasts; following %s", csv.name, csv.name)
        order = None
    preds, settings = predict_images(df, images_dir, find_checkpoints(run_dirs), jobs, batch_size, tta, device, progress)
    sub = make_submission(preds, settings, order, binarize)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        sub.to_csv(out, index=False)
        preds.to_csv(Path(out).with_name(Path(out).stem + "_images.csv"), index=False)
        log.info("submission %s: %d breasts, %d failed images, %.1f img/s", out, len(sub), settings["failed"],
                 settings["images_per_second"])
    return sub

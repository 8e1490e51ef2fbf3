"""Evaluation of out-of-fold predictions: breakdowns, worst cases, Grad-CAM, the saved decision rule."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .. import metrics, paths, tables
from ..errors import UserError
from .bootstrap import interval, patient_groups

THRESHOLD_METHODS = ("best", "quantile")


def read_predictions(train_run) -> pd.DataFrame:
    """Image-level validation predictions of the best epoch (``val_predictions.csv``)."""
    path = Path(train_run) / paths.VAL_PREDICTIONS
    if not path.exists():
        raise UserError(f"{path} not found: run notebook 04 (training) first")
    return tables.read_csv(path)


def trained_aggregation(train_run, override: str | None = None) -> str:
    """The per-breast aggregation to evaluate with: ``override``, else the one the run trained and
    selected its epochs with (its config.json), so evaluation scores what training chose."""
    if override:
        return override
    cfg = Path(train_run) / paths.CONFIG
    return json.loads(cfg.read_text()).get("aggregate", "mean") if cfg.exists() else "mean"


def choose_threshold(labels, preds, method: str = "best", quantile: float = 0.97) -> float:
    """The decision threshold on per-breast probabilities.

    ``best``: the threshold that maximizes pF1 on these breasts (optimistic on the same data);
    ``quantile``: the ``quantile``-th quantile of the predictions, so the top ``1 - quantile``
    share of breasts is called positive (as :func:`metrics.binarize_quantile` does).
    """
    if method == "best":
        return metrics.best_threshold(labels, preds)[0]
    if method == "quantile":
        if not 0 < quantile < 1:
            raise UserError(f"quantile must be in (0, 1), got {quantile}")
        return float(np.quantile(np.asarray(preds, dtype=np.float64), quantile))
    raise UserError(f"threshold_method must be one of {THRESHOLD_METHODS}, got {method!r}")


def evaluate_breasts(breasts: pd.DataFrame, threshold: float, bootstrap: int = 500, seed: int = 0) -> dict:
    """Metrics of per-breast predictions at a threshold: pF1 with a bootstrap interval, AUC, PR-AUC,
    sensitivity and specificity, plus the threshold-free summary."""
    y, p = breasts.cancer.to_numpy(), breasts.pred.to_numpy()
    out = metrics.summarize(breasts)
    lo, hi = interval(metrics.pfbeta, y, p >= threshold, n=bootstrap, seed=seed, groups=patient_groups(breasts))
    sens, spec = metrics.sensitivity_specificity(y, p, threshold)
    out.update(threshold=float(threshold), pf1=metrics.pfbeta(y, p >= threshold), pf1_ci_low=lo, pf1_ci_high=hi,
               sensitivity=sens, specificity=spec)
    return out


def write_evaluation(run, summary: dict) -> Path:
    """``<run>/evaluation.json``: what notebook 05 measured, read by the pipeline's summary, with the
    inputs it was measured on (the holdout's fingerprint, the folds' checkpoints): a later change to
    either makes it stale, and the summary says so instead of quoting it."""
    from ..learn.runs import Run
    from .estimates import clean

    path = paths.evaluation_json(run)
    path.write_text(json.dumps({**clean(summary), "inputs": Run(run).inputs()}, indent=2))
    return path


def breakdown(breasts: pd.DataFrame, by: str, threshold: float) -> pd.DataFrame:
    """AUC and pF1 (at ``threshold``) per value of ``by`` (site_id, machine_id, ...). pF1 is undefined
    (NaN, not 0) in a group without a cancer breast, as AUC is in a group of one class."""
    rows = []
    for key, g in breasts.groupby(by):
        positives = int(g.cancer.sum())
        rows.append({by: key, "breasts": len(g), "positives": positives,
                     "auc": metrics.auc(g.cancer, g.pred),
                     "pf1": metrics.pfbeta(g.cancer, g.pred >= threshold) if positives else float("nan")})
    return pd.DataFrame(rows)


def by_source(breasts: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """:func:`breakdown` by dataset (``source``; one ``rsna`` row for a folder without the column)."""
    from ..tables import sources

    return breakdown(breasts.assign(source=sources(breasts)), "source", threshold)


def by_source_estimates(oof_breasts: pd.DataFrame, holdout_breasts: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """:func:`by_source` out of fold and on the holdout (when there is one), one table indexed by
    (estimate, source)."""
    parts = [by_source(oof_breasts, threshold).assign(estimate="out of fold")]
    if len(holdout_breasts):
        parts.append(by_source(holdout_breasts, threshold).assign(estimate="holdout"))
    return pd.concat(parts).set_index(["estimate", "source"])


def by_source_records(table: pd.DataFrame) -> dict:
    """The table of :func:`by_source_estimates` as JSON for evaluation.json: {"out_of_fold": [...], "holdout": [...]}."""
    names = {"out of fold": "out_of_fold", "holdout": "holdout"}
    return {names[e]: g.reset_index(level=0, drop=True).reset_index().to_dict("records")
            for e, g in table.groupby(level=0)}


def worst_cases(images: pd.DataFrame, kind: str, n: int = 4) -> pd.DataFrame:
    """Highest-scored negatives (``fp``) or lowest-scored positives (``fn``), image level."""
    if kind == "fp":
        return images[images.cancer == 0].nlargest(n, "pred")
    if kind == "fn":
        return images[images.cancer == 1].nsmallest(n, "pred")
    raise ValueError("kind must be 'fp' or 'fn'")


def titles(rows: pd.DataFrame) -> list[str]:
    return [f"{r.prediction_id} {r.view} p={r.pred:.2f}" for r in rows.itertuples()]


def worst_gallery(images: pd.DataFrame, kind: str, n: int = 4) -> tuple[list, list]:
    """(images, titles) of the worst false positives (``fp``) or false negatives (``fn``)."""
    from ..prepare.png import load_png

    worst = worst_cases(images, kind, n)
    return [load_png(p) for p in worst.abs_path], titles(worst)


def selection_info(train_run) -> dict:
    """How the evaluated checkpoint was selected: its epoch (counted from 1, as best.pt records it), of
    how many, by which metric."""
    from ..learn.checkpoint import best_epoch, load_checkpoint

    best, history = Path(train_run) / paths.BEST, Path(train_run) / paths.METRICS
    if not best.exists():
        return {}
    ckpt = load_checkpoint(best)
    return {"best_epoch": best_epoch(ckpt),
            "epochs_run": len(pd.read_csv(history)) if history.exists() else None,
            "select_metric": ckpt["config"].get("select_metric", "pf1"),
            "estimate": "selection (best epoch and threshold chosen on these breasts)"}


def grad_cam(model, x) -> np.ndarray:
    """Grad-CAM (Selvaraju et al., 2017) of the cancer logit on the backbone's last feature map.

    ``x``: (1, C, H, W) tensor. Returns an HxW float array in [0, 1].
    """
    import torch
    import torch.nn.functional as F

    model.eval()
    with torch.enable_grad():
        fmap = model.backbone.forward_features(x).detach().requires_grad_(True)
        logit = model.forward_head(fmap)["cancer"].sum()
        (grad,) = torch.autograd.grad(logit, fmap)
    weights = grad.mean((2, 3), keepdim=True)
    cam = F.relu((weights * fmap).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam - cam.min()
    return (cam / cam.max().clamp_min(1e-8)).detach().cpu().numpy()


def grad_cams(model, image_paths) -> tuple[list, list]:
    """(images, Grad-CAM heatmaps) for PNG files, for a gallery."""
    import torch

    from ..prepare.png import load_png

    pics, cams = [], []
    for path in image_paths:
        img = load_png(path)
        pics.append(img)
        cams.append(grad_cam(model, torch.from_numpy(img)[None, None]))
    return pics, cams


def save_decision_all(run, threshold: float, aggregate: str, extra: dict | None = None) -> list[Path]:
    """The same decision rule (chosen out of fold) into every current fold: the fold ensemble applies it.
    It records the checkpoints it was chosen on, so a fold retrained later makes it stale, never applied."""
    from ..learn.runs import Run

    folds = Run(run).folds()
    chosen_on = {str(f.k): f.fingerprint() for f in folds}
    return [save_decision(f.folder, threshold, aggregate, {**(extra or {}), "checkpoints": chosen_on}) for f in folds]


def save_decision(train_run, threshold: float, aggregate: str, extra: dict | None = None) -> Path:
    """Record the threshold and aggregation chosen on validation data, and the checkpoint they were chosen
    with; inference reads it while that checkpoint is the folder's."""
    from ..learn.runs import file_fingerprint

    path = Path(train_run) / paths.THRESHOLD
    path.write_text(json.dumps({"threshold": float(threshold), "aggregate": aggregate,
                                "checkpoint": file_fingerprint(Path(train_run) / paths.BEST), **(extra or {})},
                               indent=2))
    return path

"""The competition metric and the evaluation around it.

Probabilistic F-beta (Kaggle RSNA 2023 ``pfbeta``; Chinchor & Sundheim's F-measure with
probabilistic counts): predictions clipped to [0, 1]; ``ctp`` = sum of predictions on positives,
``cfp`` = sum on negatives; precision = ctp / (ctp + cfp), recall = ctp / n_positive. Scored per
breast (``prediction_id``), usually after binarizing at a threshold chosen on validation data.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .tables import with_prediction_id


def pfbeta(labels, preds, beta: float = 1.0) -> float:
    """Probabilistic F-beta; 0.0 when precision or recall is 0 or undefined (no positives / no mass)."""
    y = np.asarray(labels, dtype=np.float64).ravel() != 0
    p = np.clip(np.asarray(preds, dtype=np.float64).ravel(), 0.0, 1.0)
    if y.shape != p.shape:
        raise ValueError(f"labels and preds differ in length: {y.size} vs {p.size}")
    ctp, cfp, n_pos = p[y].sum(), p[~y].sum(), y.sum()
    if n_pos == 0 or ctp + cfp == 0:
        return 0.0
    precision, recall = ctp / (ctp + cfp), ctp / n_pos
    if precision <= 0 or recall <= 0:
        return 0.0
    b2 = beta * beta
    return float((1 + b2) * precision * recall / (b2 * precision + recall))


def aggregate_breasts(df: pd.DataFrame, pred: str = "pred", how: str = "mean", label: str = "cancer") -> pd.DataFrame:
    """One row per breast (``prediction_id``): aggregated prediction (mean or max) and label (max)."""
    if how not in ("mean", "max"):
        raise ValueError(f"how must be 'mean' or 'max', got {how!r}")
    df = with_prediction_id(df)
    agg = {pred: how}
    if label in df:
        agg[label] = "max"
    keep = [c for c in ("patient_id", "site_id", "machine_id", "source") if c in df]
    for c in keep:
        agg[c] = "first"
    return df.groupby("prediction_id", sort=False).agg(agg).reset_index()


def best_threshold(labels, preds, thresholds=None, beta: float = 1.0) -> tuple[float, float]:
    """Threshold maximizing pF-beta of the binarized predictions. Returns (threshold, score)."""
    p = np.asarray(preds, dtype=np.float64)
    if thresholds is None:
        thresholds = np.unique(np.concatenate([np.linspace(0.0, 1.0, 201), np.quantile(p, np.linspace(0, 1, 101))]))
    scores = [pfbeta(labels, p >= t, beta) for t in thresholds]
    i = int(np.argmax(scores))
    return float(thresholds[i]), float(scores[i])


def threshold_curve(labels, preds, thresholds=None, beta: float = 1.0) -> pd.DataFrame:
    """pF-beta of binarized predictions for each threshold (for plotting)."""
    thresholds = np.linspace(0.0, 1.0, 101) if thresholds is None else np.asarray(thresholds)
    return pd.DataFrame({"threshold": thresholds, "pf1": [pfbeta(labels, np.asarray(preds) >= t, beta)
                                                          for t in thresholds]})


def binarize_quantile(preds, quantile: float) -> np.ndarray:
    """1 for the top ``1 - quantile`` share of predictions (e.g. 0.98 -> the top 2 %)."""
    p = np.asarray(preds, dtype=np.float64)
    return (p >= np.quantile(p, quantile)).astype(np.float64)


def auc(labels, preds) -> float:
    """ROC AUC; NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels)
    return float(roc_auc_score(y, preds)) if len(np.unique(y)) == 2 else float("nan")


def pr_auc(labels, preds) -> float:
    """Average precision (area under the precision-recall curve); NaN with one class."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(labels)
    return float(average_precision_score(y, preds)) if len(np.unique(y)) == 2 else float("nan")


def sensitivity_specificity(labels, preds, threshold: float) -> tuple[float, float]:
    y = np.asarray(labels).astype(bool)
    yhat = np.asarray(preds) >= threshold
    sens = (yhat & y).sum() / y.sum() if y.any() else float("nan")
    spec = (~yhat & ~y).sum() / (~y).sum() if (~y).any() else float("nan")
    return float(sens), float(spec)


def summarize(breasts: pd.DataFrame, pred: str = "pred", label: str = "cancer") -> dict:
    """pF1 of raw probabilities, best threshold and its pF1, AUC, PR-AUC, sensitivity/specificity."""
    y, p = breasts[label].to_numpy(), breasts[pred].to_numpy()
    thr, best = best_threshold(y, p)
    sens, spec = sensitivity_specificity(y, p, thr)
    return {"pf1_raw": pfbeta(y, p), "pf1": best, "threshold": thr, "auc": auc(y, p), "pr_auc": pr_auc(y, p),
            "sensitivity": sens, "specificity": spec, "breasts": len(y), "positives": int(np.sum(y))}

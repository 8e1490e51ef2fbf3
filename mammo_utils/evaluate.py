"""Evaluation of out-of-fold predictions: breakdowns, worst cases, Grad-CAM, the saved decision rule."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import metrics


def read_predictions(train_run) -> pd.DataFrame:
    """Image-level validation predictions of the best epoch (``val_predictions.csv``)."""
    path = Path(train_run) / "val_predictions.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run notebook 04 (training) first")
    return pd.read_csv(path)


def breakdown(breasts: pd.DataFrame, by: str, threshold: float) -> pd.DataFrame:
    """AUC and pF1 (at ``threshold``) per value of ``by`` (site_id, machine_id, ...)."""
    rows = []
    for key, g in breasts.groupby(by):
        rows.append({by: key, "breasts": len(g), "positives": int(g.cancer.sum()),
                     "auc": metrics.auc(g.cancer, g.pred),
                     "pf1": metrics.pfbeta(g.cancer, g.pred >= threshold)})
    return pd.DataFrame(rows)


def worst_cases(images: pd.DataFrame, kind: str, n: int = 4) -> pd.DataFrame:
    """Highest-scored negatives (``fp``) or lowest-scored positives (``fn``), image level."""
    if kind == "fp":
        return images[images.cancer == 0].nlargest(n, "pred")
    if kind == "fn":
        return images[images.cancer == 1].nsmallest(n, "pred")
    raise ValueError("kind must be 'fp' or 'fn'")


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


def save_decision(train_run, threshold: float, aggregate: str, extra: dict | None = None) -> Path:
    """Record the threshold and aggregation chosen on validation data; inference reads it."""
    path = Path(train_run) / "threshold.json"
    path.write_text(json.dumps({"threshold": float(threshold), "aggregate": aggregate, **(extra or {})}, indent=2))
    return path

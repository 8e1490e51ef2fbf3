"""Figures of a run judged as a screening programme and a journal ask (:mod:`mammo_utils.judge.clinical`):
the reliability diagram with its bin counts, and the operating points on the ROC curve beside the BCSC
radiologists. Each function returns a titled, labelled matplotlib Figure."""
from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..judge.screening import ACCEPTABLE, BCSC


def reliability_diagram(tables: dict, judged_on: str = "holdout"):
    """Observed cancer rate against mean predicted probability per bin (one line per set of
    probabilities: raw, recalibrated), above a bar chart of the breasts in each bin: a point that
    rests on three breasts says little."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], ls=":", color="gray", label="perfect calibration")
    width = 0.8 / max(1, len(tables))
    for k, (name, t) in enumerate(tables.items()):
        top.plot(t.mean_predicted, t.observed, marker="o", label=name)
        centers = (t.low + t.high) / 2
        bottom.bar(centers + (k - (len(tables) - 1) / 2) * width * (t.high - t.low), t.n, width=width * (t.high - t.low),
                   label=name)
        for x, y, n in zip(t.mean_predicted, t.observed, t.n):
            top.annotate(f"n={n}", (x, y), xytext=(3, 3), textcoords="offset points", fontsize=7)
    top.set(title=f"Reliability diagram ({judged_on}, per breast; n = breasts per bin)",
            ylabel="observed cancer rate", xlim=(0, 1), ylim=(0, 1.05))
    top.legend(loc="upper left", fontsize=8)
    bottom.set(xlabel="mean predicted probability", ylabel="breasts per bin")
    bottom.set_yscale("symlog")
    fig.tight_layout()
    return fig


def roc_operating_points(labels, preds, operating: pd.DataFrame, level: str = "examination",
                         estimate: str = "holdout"):
    """The ROC curve of ``level`` (examination or breast) scores, each operating point (chosen out of
    fold) where it landed, the BCSC radiologists' point and the acceptable range (sensitivity >= 80 %
    with specificity >= 85 %)."""
    from sklearn.metrics import roc_curve

    y = np.asarray(labels)
    fig, ax = plt.subplots(figsize=(6.5, 6))
    ax.fill_between([0, 1 - ACCEPTABLE["specificity"]], ACCEPTABLE["sensitivity"], 1, color="#b8e186", alpha=0.4,
                    label="acceptable (sens >= 80 %, spec >= 85 %)")
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, preds)
        ax.plot(fpr, tpr, color="#1f77b4", label=f"model, {estimate} ({len(y)} {level}s, {int(y.sum())} cancer)")
    else:
        ax.text(0.5, 0.5, f"ROC undefined: {len(y)} {level}s, {int(y.sum())} cancer", ha="center")
    rows = operating[(operating.level == level) & (operating.estimate == estimate)]
    for r, marker in zip(rows.itertuples(), itertools.cycle("osD^vPX<>h")):  # every point, however many
        ax.plot(1 - r.specificity, r.sensitivity, marker=marker, ls="none", markersize=8,
                label=f"{r.point} (t = {r.threshold:.3g})")
    ax.plot(1 - BCSC["specificity"], BCSC["sensitivity"], marker="*", color="black", markersize=14, ls="none",
            label="BCSC radiologists (Lehman 2017)")
    ax.plot([0, 1], [0, 1], ls=":", color="gray", label="chance")
    ax.set(title=f"Operating points on the ROC curve ({estimate}, per {level})\nthresholds chosen out of fold",
           xlabel="1 - specificity (false positive rate)", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig

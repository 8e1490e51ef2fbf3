"""Every figure the notebooks show. Each function returns a titled, labelled matplotlib Figure."""
from __future__ import annotations

import math

import matplotlib

if matplotlib.get_backend().lower().startswith("qt"):  # headless safety; notebooks use their inline backend
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def _grid(n: int, cols: int, size=(3.0, 3.6)):
    """``n`` axes in at most ``cols`` columns, as evenly filled as the rows allow (5 images in 2 rows
    of 3, not 4 + 1); the few slots left over are switched off."""
    rows = max(1, math.ceil(n / max(1, cols)))
    cols = max(1, math.ceil(n / rows))
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()


def _image_axis(ax, img, title: str, cmap="gray"):
    """Show one image on ``ax`` with its title and pixel-axis labels."""
    ax.imshow(img, cmap=cmap, vmin=0, vmax=1 if img.dtype.kind == "f" else None)
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("x (px)", fontsize=7)
    ax.set_ylabel("y (px)", fontsize=7)
    ax.tick_params(labelsize=6)


# ---- EDA ------------------------------------------------------------------------------------------

def class_balance(df: pd.DataFrame, by=("site_id", "machine_id", "view", "laterality")):
    """Cancer rate (bars) and image count (annotation) per value of each column in ``by``."""
    fig, axes = plt.subplots(1, len(by) + 1, figsize=(4.4 * (len(by) + 1), 4.4), layout="constrained")
    counts = df.cancer.value_counts().reindex([0, 1], fill_value=0)
    axes[0].bar(["no cancer", "cancer"], counts.values, color=["#8da0cb", "#fc8d62"])
    axes[0].set(title=f"Images by label\n({counts[1] / len(df):.1%} cancer)", ylabel="images")
    for ax, col in zip(axes[1:], by):
        g = df.groupby(col).cancer.agg(["mean", "size"])
        ax.bar(g.index.astype(str), g["mean"] * 100, color="#fc8d62")
        for i, n in enumerate(g["size"]):
            ax.annotate(f"{n}", (i, g["mean"].iloc[i] * 100), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=8, rotation=90 if len(g) > 6 else 0)
        ax.set_ylim(0, max(1e-9, g["mean"].max() * 100) * 1.35)  # headroom: the counts never touch the title
        ax.set(title=f"Cancer rate by {col}\n(number above a bar: images)", xlabel=col, ylabel="cancer images (%)")
        ax.tick_params(axis="x", rotation=45, labelsize=8)
    fig.suptitle("Class balance")
    return fig


def patient_overview(df: pd.DataFrame):
    """Images per patient, age by label, density and BIRADS, difficult negatives."""
    fig, axes = plt.subplots(1, 5, figsize=(21, 3.6))
    per_patient = df.groupby("patient_id").size()
    axes[0].hist(per_patient, bins=np.arange(per_patient.min(), per_patient.max() + 2) - 0.5, color="#66c2a5")
    axes[0].set(title="Images per patient", xlabel="images", ylabel="patients")
    for label, color in ((0, "#8da0cb"), (1, "#fc8d62")):
        ages = df[df.cancer == label].drop_duplicates("patient_id").age.dropna()
        axes[1].hist(ages, bins=20, alpha=0.6, density=True, color=color, label=["no cancer", "cancer"][label])
    axes[1].set(title=f"Age by label ({df.age.isna().mean():.1%} missing)", xlabel="age (years)", ylabel="density")
    axes[1].legend()
    for ax, col in ((axes[2], "density"), (axes[3], "BIRADS")):
        vc = df[col].astype(str).replace("nan", "missing").value_counts().sort_index()
        ax.bar(vc.index, vc.values, color="#a6d854")
        ax.set(title=f"{col} (images)", xlabel=col, ylabel="images")
    if "difficult_negative_case" in df:
        dn = df.groupby(df.difficult_negative_case.astype(str)).cancer.agg(["size"])
        axes[4].bar(dn.index, dn["size"], color="#e78ac3")
    axes[4].set(title="Difficult negative cases", xlabel="difficult_negative_case", ylabel="images")
    fig.suptitle("Patients and labels")
    fig.tight_layout()
    return fig


def header_overview(headers: pd.DataFrame):
    """Image sizes, bit depth, photometric and VOI LUT function per machine, from DICOM headers."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    for m, g in headers.groupby("machine_id"):
        axes[0].scatter(g.Columns, g.Rows, s=10, label=str(m))
    axes[0].set(title="Image size by machine", xlabel="columns (px)", ylabel="rows (px)")
    axes[0].legend(title="machine_id", fontsize=7)
    for ax, col in ((axes[1], "BitsStored"), (axes[2], "VOILUTFunction")):
        t = pd.crosstab(headers.machine_id.astype(str), headers[col].astype(str).replace("None", "none"))
        t.plot.bar(stacked=True, ax=ax)
        ax.set(title=f"{col} by machine", xlabel="machine_id", ylabel="images")
    fig.suptitle("DICOM headers")
    fig.tight_layout()
    return fig


def image_gallery(images, titles, suptitle: str, cols: int = 4, boxes=None, cmap="gray"):
    """A grid of images, optionally with a box ``(y0, x0, y1, x1)`` drawn on each."""
    fig, axes = _grid(len(images), cols)
    for i, (img, t) in enumerate(zip(images, titles)):
        _image_axis(axes[i], img, t, cmap)
        if boxes is not None and boxes[i] is not None:
            y0, x0, y1, x1 = boxes[i]
            axes[i].add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="red", lw=1.5))
    fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


# ---- preprocessing --------------------------------------------------------------------------------

def preprocess_overview(manifest: pd.DataFrame):
    """Crop area fraction and seconds per image, by machine."""
    m = manifest.copy()
    m["area_fraction"] = (m.bbox_y1 - m.bbox_y0) * (m.bbox_x1 - m.bbox_x0) / (m.source_rows * m.source_cols)
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for mid, g in m.groupby("machine_id") if "machine_id" in m else [("all", m)]:
        axes[0].hist(g.area_fraction, bins=20, range=(0, 1), alpha=0.5, label=str(mid))
        axes[1].hist(g.seconds * 1000, bins=20, alpha=0.5, label=str(mid))
    axes[0].set(title="Crop area / image area", xlabel="fraction of the image kept", ylabel="images")
    axes[1].set(title="Preprocessing time per image (one worker)", xlabel="milliseconds", ylabel="images")
    axes[0].legend(title="machine_id", fontsize=7)
    fig.suptitle("Preprocessing")
    fig.tight_layout()
    return fig


# ---- sampling -------------------------------------------------------------------------------------

def fold_balance(folds: pd.DataFrame):
    """Patients, cancer patients and images per fold and site."""
    pat = folds.groupby(["fold", "site_id", "patient_id"]).cancer.max().reset_index()
    t = pat.groupby(["fold", "site_id"]).cancer.agg(["size", "sum"]).unstack("site_id")
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    t["size"].plot.bar(ax=axes[0])
    axes[0].set(title="Patients per fold and site", xlabel="fold", ylabel="patients")
    t["sum"].plot.bar(ax=axes[1])
    axes[1].set(title="Cancer patients per fold and site", xlabel="fold", ylabel="cancer patients")
    for ax in axes:
        ax.legend(title="site_id")
    fig.suptitle("Patient-grouped stratified folds")
    fig.tight_layout()
    return fig


def strategy_comparison(table: pd.DataFrame):
    """Images kept vs discarded and positive share for each sampling strategy."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    axes[0].barh(table.strategy, table.images_per_epoch, color="#66c2a5", label="used per epoch")
    if "discarded" in table:
        axes[0].barh(table.strategy, table.discarded, left=table.images_per_epoch, color="#d9d9d9", label="discarded")
    axes[0].set(title="Images per epoch", xlabel="images", ylabel="strategy")
    axes[0].legend(loc="lower right", fontsize=8)
    axes[1].barh(table.strategy, 100 * table.positives_per_epoch / table.images_per_epoch, color="#fc8d62")
    axes[1].set(title="Share of positives the model sees", xlabel="positive images (%)", ylabel="strategy")
    fig.suptitle("Sampling strategies")
    fig.tight_layout()
    return fig


# ---- training -------------------------------------------------------------------------------------

def learning_curves(history: pd.DataFrame, best_epoch: int | None = None):
    """Loss, validation pF1 and AUC per epoch (counted from 1, as the console and metrics.csv count);
    ``best_epoch``, the one best.pt holds, is marked on every panel."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    axes[0].plot(history.epoch, history.train_loss, marker="o")
    axes[0].set(title="Training loss", xlabel="epoch", ylabel="loss")
    axes[1].plot(history.epoch, history.val_pf1, marker="o", label="pF1 (best threshold)")
    axes[1].plot(history.epoch, history.val_pf1_raw, marker=".", label="pF1 (probabilities)")
    axes[1].set(title="Validation pF1 per breast", xlabel="epoch", ylabel="pF1")
    axes[2].plot(history.epoch, history.val_auc, marker="o", color="#fc8d62")
    axes[2].set(title="Validation AUC per breast", xlabel="epoch", ylabel="ROC AUC", ylim=(0, 1.02))
    for ax in axes:
        if best_epoch:
            ax.axvline(best_epoch, color="gray", ls="--", lw=1, label=f"best epoch {best_epoch} (best.pt)")
        ax.set_xticks(list(history.epoch))
        ax.legend(fontsize=8)
    fig.suptitle("Learning curves")
    fig.tight_layout()
    return fig


# ---- evaluation -----------------------------------------------------------------------------------

def threshold_curve(curve: pd.DataFrame, chosen: float):
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(curve.threshold, curve.pf1)
    ax.axvline(chosen, color="red", ls="--", label=f"chosen {chosen:.2f}")
    ax.set(title="pF1 per breast vs threshold", xlabel="threshold", ylabel="pF1")
    ax.legend()
    return fig


def roc_pr(labels, preds, split: str = "validation"):
    """ROC and precision-recall curves per breast, with their areas, the split and its size."""
    from sklearn.metrics import (
        average_precision_score,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )

    y = np.asarray(labels)
    n, pos = len(y), int(np.sum(y))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    if len(np.unique(y)) < 2:  # no curve to draw: say why instead of failing
        for ax, name in zip(axes, ("ROC curve", "Precision-recall curve")):
            ax.text(0.5, 0.5, f"undefined: {n} breasts, {pos} cancer", ha="center", va="center")
            ax.set(title=f"{name}, {split}", xlabel="", ylabel="")
        return fig
    fpr, tpr, _ = roc_curve(y, preds)
    axes[0].plot(fpr, tpr, label=f"AUC {roc_auc_score(y, preds):.3f}")
    axes[0].plot([0, 1], [0, 1], ls=":", color="gray", label="chance")
    axes[0].set(title=f"ROC curve\n{split}: {n} breasts, {pos} cancer", xlabel="false positive rate",
                ylabel="true positive rate")
    prec, rec, _ = precision_recall_curve(y, preds)
    axes[1].plot(rec, prec, label=f"average precision {average_precision_score(y, preds):.3f}")
    axes[1].axhline(np.mean(y), ls=":", color="gray", label=f"prevalence {np.mean(y):.3f}")
    axes[1].set(title=f"Precision-recall curve\n{split}: {n} breasts, {pos} cancer", xlabel="recall",
                ylabel="precision")
    for ax in axes:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def confusion_calibration(labels, preds, threshold: float, bins: int = 8):
    from sklearn.metrics import confusion_matrix

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    cm = confusion_matrix(labels, np.asarray(preds) >= threshold, labels=[0, 1])
    axes[0].imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        axes[0].text(j, i, str(v), ha="center", va="center", fontsize=14)
    axes[0].set(title=f"Confusion matrix at threshold {threshold:.2f}", xlabel="predicted", ylabel="true",
                xticks=[0, 1], yticks=[0, 1], xticklabels=["no cancer", "cancer"], yticklabels=["no cancer", "cancer"])
    edges = np.quantile(preds, np.linspace(0, 1, bins + 1))
    idx = np.clip(np.searchsorted(edges, preds, side="right") - 1, 0, bins - 1)
    df = pd.DataFrame({"y": labels, "p": preds, "b": idx}).groupby("b").agg(p=("p", "mean"), y=("y", "mean"),
                                                                              n=("y", "size"))
    axes[1].plot(df.p, df.y, marker="o", label="quantile bins")
    for r in df.itertuples():
        axes[1].annotate(f"n={r.n}", (r.p, r.y), xytext=(3, 3), textcoords="offset points", fontsize=7)
    axes[1].plot([0, 1], [0, 1], ls=":", color="gray", label="perfect calibration")
    axes[1].set(title=f"Calibration ({len(df)} quantile bins, n = breasts per bin)", xlabel="mean predicted probability",
                ylabel="observed cancer rate")
    axes[1].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def breakdown(table: pd.DataFrame, by: str):
    """Bar chart of AUC and pF1 per group (a table from evaluate.breakdown). A group where a metric is
    undefined (no cancer breast, or no negative) shows "n/a" instead of a bar: undefined is not zero."""
    fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(table) + 3), 4))
    x = np.arange(len(table))
    for offset, col, label in ((-0.2, "auc", "AUC"), (0.2, "pf1", "pF1 at threshold")):
        values = table[col].astype(float)
        ax.bar(x + offset, values.fillna(0), width=0.4, label=label)
        for xi, v in zip(x, values):
            if v != v:
                ax.text(xi + offset, 0.02, "n/a", ha="center", va="bottom", fontsize=8, rotation=90, color="gray")
    ax.set_xticks(x, [f"{k}\n({p}/{n})" for k, p, n in zip(table[by].astype(str), table.positives, table.breasts)])
    ax.set(title=f"Validation metrics by {by} (n/a: no cancer breast, or no negative, in the group)",
           xlabel=f"{by} (cancer breasts / breasts)", ylabel="score", ylim=(0, 1.25))
    ax.legend(loc="upper center", ncol=2, fontsize=8, frameon=False)  # above the bars, in the headroom
    fig.tight_layout()
    return fig


def prediction_histogram(preds, threshold: float | None = None, title: str = "Predicted probability per breast"):
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.hist(preds, bins=30, range=(0, 1), color="#8da0cb")
    if threshold is not None:
        ax.axvline(threshold, color="red", ls="--", label=f"threshold {threshold:.2f}")
        ax.legend()
    ax.set(title=title, xlabel="probability of cancer", ylabel="breasts")
    return fig


def heatmaps(images, cams, titles, suptitle: str = "Grad-CAM: where the model looks", cols: int = 4):
    fig, axes = _grid(len(images), cols)
    for ax, img, cam, t in zip(axes, images, cams, titles):
        _image_axis(ax, img, t)
        ax.imshow(cam, cmap="jet", alpha=0.4, vmin=0, vmax=1)
    fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


# ---- crop quality ---------------------------------------------------------------------------------

def _draw_box(ax, box, color, label=None):
    y0, x0, y1, x1 = box
    ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=color, lw=1.5, label=label))


def segmentation_comparison(images, masks, ours, legacy, titles, cols: int = 3):
    """Hard phantoms with the true tissue outline (green), our box (red) and the previous method's (orange)."""
    fig, axes = _grid(len(images), cols, size=(3.6, 4.2))
    for i, (img, mask, t) in enumerate(zip(images, masks, titles)):
        _image_axis(axes[i], img, t)
        axes[i].contour(mask, levels=[0.5], colors="lime", linewidths=0.8)
        _draw_box(axes[i], ours[i], "red", "background model (ours)")
        _draw_box(axes[i], legacy[i], "orange", "Otsu/3 + opening (previous)")
    if images:
        axes[0].legend(loc="lower right", fontsize=6)
    fig.suptitle("Breast boxes on hard phantoms (green: true tissue)")
    fig.tight_layout()
    return fig


def worst_crops(images, masks, boxes, titles, cols: int = 4):
    """The worst crops of a run: image, true tissue outline (green) and the box kept (red)."""
    fig, axes = _grid(max(1, len(images)), cols)
    if not images:
        axes[0].text(0.5, 0.5, "no ground truth (not synthetic data)", ha="center", va="center")
        axes[0].set_axis_off()
    for i, (img, mask, t) in enumerate(zip(images, masks, titles)):
        _image_axis(axes[i], img, t)
        axes[i].contour(mask, levels=[0.5], colors="lime", linewidths=0.8)
        _draw_box(axes[i], boxes[i], "red")
    fig.suptitle("The four worst crops against the true tissue mask (green)")
    fig.tight_layout()
    return fig


# ---- sweeps ---------------------------------------------------------------------------------------

def _interval_bars(ax, y, lo, hi):
    """95 % intervals as horizontal bars from ``lo`` to ``hi``: a percentile bootstrap interval need not
    contain its point estimate (a skewed statistic, few cancers), so the bar is not drawn around the point."""
    ax.hlines(y, lo, hi, color="black", lw=1)
    ax.vlines(np.r_[np.asarray(lo, float), np.asarray(hi, float)], np.r_[y, y] - 0.12, np.r_[y, y] + 0.12,
              color="black", lw=1)


def comparison(table: pd.DataFrame, target: str = "holdout"):
    """The target's AUC and pF1 per combination (locked holdout, or the synthetic test set) with 95 %
    intervals, beside the out-of-fold AUC (its threshold was chosen there)."""
    pre, name = ("holdout", "Locked holdout") if target == "holdout" else ("test", "Synthetic test set")
    fig, axes = plt.subplots(1, 3, figsize=(16, 0.6 * len(table) + 2.5), sharey=True)
    y = np.arange(len(table))
    colors = ["#999999" if c else "#1f77b4" for c in table.control]
    for ax, col, title in ((axes[0], f"{pre}_auc_seed_mean", f"{name} AUC (untouched)"),
                           (axes[1], f"{pre}_pf1_seed_mean", f"{name} pF1 at each run's OOF threshold"),
                           (axes[2], "oof_auc_seed_mean", "Out-of-fold AUC (threshold chosen here)")):
        lo, hi = table[f"{col}_ci_low"], table[f"{col}_ci_high"]
        _interval_bars(ax, y, lo, hi)
        ax.scatter(table[col], y, c=colors, zorder=3)
        if "auc" in col:
            ax.axvline(0.5, ls=":", color="gray", label="chance")
            ax.legend(loc="lower right", fontsize=7)
        ax.set(title=title, xlabel=col.replace("_", " "))
    axes[0].set_yticks(y, [f"{c}{' (control)' if k else ''}" for c, k in zip(table.combination, table.control)])
    axes[0].set_ylabel("combination (mean over seeds, 95 % interval)")
    fig.suptitle("Recipes compared")
    fig.tight_layout()
    return fig


def paired_differences(paired: pd.DataFrame):
    """Difference to the baseline per combination (paired bootstrap over the same breasts)."""
    fig, ax = plt.subplots(figsize=(8, 0.6 * max(1, len(paired)) + 2))
    y = np.arange(len(paired))
    if len(paired):
        _interval_bars(ax, y, paired.ci_low, paired.ci_high)
        ax.plot(paired["diff"], y, "o")
        ax.set_yticks(y, paired.combination)
        ax.set_title(f"{paired.metric.iloc[0]}: difference to {paired.baseline.iloc[0]} (paired bootstrap, 95 %)")
    else:
        ax.set_title("only one combination: nothing to compare")
    ax.axvline(0, color="gray", ls=":")
    ax.set(xlabel="difference (combination - baseline)", ylabel="combination")
    fig.tight_layout()
    return fig


def overlaid_curves(curves: pd.DataFrame):
    """Validation AUC and training loss per epoch of every run, one colour per combination."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    combos = list(dict.fromkeys(curves.combination)) if len(curves) else []
    cmap = plt.get_cmap("tab10")
    for k, combo in enumerate(combos):
        for j, (_, g) in enumerate(curves[curves.combination == combo].groupby("run")):
            label = combo if j == 0 else None
            axes[0].plot(g.epoch, g.val_auc, color=cmap(k % 10), alpha=0.8, label=label)
            axes[1].plot(g.epoch, g.train_loss, color=cmap(k % 10), alpha=0.8, label=label)
    axes[0].set(title="Validation AUC per epoch", xlabel="epoch", ylabel="AUC")
    axes[1].set(title="Training loss per epoch", xlabel="epoch", ylabel="loss")
    if combos:
        axes[0].legend(fontsize=7)
    fig.suptitle("Learning curves of every run (one line per seed)")
    fig.tight_layout()
    return fig

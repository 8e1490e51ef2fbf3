"""Honest estimates on any dataset: a locked holdout, out-of-fold predictions, and the figures of both.

* **Holdout.** The locked patients of :mod:`mammo_utils.learn.holdout`.
* **Out of fold.** Every fold's validation predictions of its best epoch, pooled: every image of the
  non-holdout data once. The decision threshold is chosen on the pooled OOF breasts.
* **Holdout figures.** The fold ensemble (mean of the folds' probabilities) predicts the holdout
  images from the run's own preprocessed files, breasts are aggregated as the run trained, and the OOF
  threshold is applied unchanged: nothing about these breasts was chosen by looking at them.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from .. import metrics, paths, tables
from ..errors import UserError
from ..learn.holdout import read_holdout
from ..learn.runs import Run
from .bootstrap import interval, patient_groups, resamples

SELECTION_NOTE = "optimistic: the best epoch and the threshold were chosen on these breasts"


# ---- folds -------------------------------------------------------------------------------------------

def fold_list(folds, n_splits: int) -> list[int]:
    """``"all"`` or a list (or one number) of folds, checked against ``n_splits``."""
    chosen = list(range(n_splits)) if folds in ("all", None) else [folds] if isinstance(folds, int) else list(folds)
    bad = [k for k in chosen if not isinstance(k, int) or not 0 <= k < n_splits]
    if bad or not chosen:
        raise UserError(f"folds must be 'all' or a list of folds in 0..{n_splits - 1}, got {folds!r}")
    return sorted(set(chosen))


def trained_folds(run) -> list[int]:
    """The folds of a run with a current checkpoint of the run's recipe (:meth:`Run.folds`)."""
    return Run(run).fold_numbers()


def collect_oof(run, folds=None) -> pd.DataFrame:
    """Every current fold's validation predictions (best epoch) with their ``fold``: each image of the
    non-holdout data once, when every fold was trained. Written to ``<run>/oof_predictions.csv``."""
    current = Run(run).folds()
    chosen = [f for f in current if folds is None or f.k in folds]
    if not chosen:
        raise UserError(f"no trained fold under {paths.train_root(run)}: run notebook 04 first")
    parts = [tables.read_csv(f.folder / paths.VAL_PREDICTIONS).assign(fold=f.k) for f in chosen]
    oof = pd.concat(parts, ignore_index=True)
    if not oof.image_id.is_unique:
        raise UserError(f"{run}: an image is in the validation of two folds: folds.csv changed between folds?")
    oof.to_csv(paths.oof_csv(run), index=False)
    return oof


# ---- figures -----------------------------------------------------------------------------------------

def estimate(breasts: pd.DataFrame, threshold: float, n_boot: int = 1000, seed: int = 0) -> dict:
    """AUC, PR-AUC and pF1 at ``threshold`` per breast, each with a 95 % bootstrap interval over patients."""
    y, p = breasts.cancer.to_numpy(), breasts.pred.to_numpy()
    out = {"threshold": float(threshold), "breasts": int(len(y)), "cancer_breasts": int(np.sum(y))}
    if not len(y):
        return {**out, **{k: float("nan") for k in ("auc", "pr_auc", "pf1")},
                **{f"{k}_ci": [float("nan")] * 2 for k in ("auc", "pr_auc", "pf1")}}
    sens, spec = metrics.sensitivity_specificity(y, p, threshold)
    out.update(sensitivity=float(sens), specificity=float(spec))  # at the same threshold as pf1
    idx = resamples(len(y), n_boot, seed, patient_groups(breasts))  # a patient's breasts resampled together
    for name, fn, pred in (("auc", metrics.auc, p), ("pr_auc", metrics.pr_auc, p), ("pf1", metrics.pfbeta, p >= threshold)):
        out[name] = float(fn(y, pred))
        out[f"{name}_ci"] = list(interval(fn, y, pred, indices=idx))
    return out


def per_fold(oof: pd.DataFrame, aggregate: str, threshold: float) -> pd.DataFrame:
    """The OOF figures of each fold alone, to show their spread."""
    rows = []
    for k, g in oof.groupby("fold"):
        b = metrics.aggregate_breasts(g, how=aggregate)
        rows.append({"fold": k, "breasts": len(b), "cancer_breasts": int(b.cancer.sum()),
                     "auc": metrics.auc(b.cancer, b.pred), "pr_auc": metrics.pr_auc(b.cancer, b.pred),
                     "pf1": metrics.pfbeta(b.cancer, b.pred >= threshold)})
    return pd.DataFrame(rows)


def check_fingerprints(run, folds, expected: str) -> None:
    """Every fold must have been trained beside this very holdout (a later notebook 03 with another
    seed or fraction would have put some of its patients into training). Read from each fold's
    config.json, so no checkpoint is loaded twice."""
    for k in folds:
        saved = json.loads((paths.train_dir(run, k) / paths.CONFIG).read_text()).get("holdout_fingerprint")
        if saved is None:
            raise UserError(f"fold {k} of {run} records no holdout (trained before the holdout was drawn, or from "
                            f"folds without one): its training may hold holdout patients; train it again (notebook 04)")
        if saved != expected:
            raise UserError(f"fold {k} of {run} was trained beside another holdout ({saved}, now {expected}): train "
                            f"the folds again (notebook 04) before judging them on this one")


def predict_holdout(run, folds=None, batch_size: int | None = None, workers: int | None = None,
                    device=None) -> pd.DataFrame:
    """Image probabilities of the holdout: the mean of the current folds' probabilities, read from the
    PNGs the run trained on (preprocessing is reused, never repeated; an image that failed it stays
    NaN). Predicted as the run validated: on the GPU when there is one, at the run's precision, batch
    size and workers (None: the run's). Written to ``<run>/holdout_predictions.csv``."""
    import torch

    from ..learn.data import create_loader
    from ..learn.engine import predict_loader, resolve_amp
    from ..tables import read_manifest
    from .inference import PngDataset, load_ensemble, model_samples

    holdout, info = read_holdout(run)
    current = Run(run)
    folds = current.fold_numbers() if folds is None else folds
    if holdout.empty:
        raise UserError(f"{paths.holdout_csv(run)} is empty: holdout_fraction was 0")
    if not folds:
        raise UserError(f"no trained fold under {paths.train_root(run)}: run notebook 04 first")
    check_fingerprints(run, folds, info["fingerprint"])
    manifest = read_manifest(current.fold(folds[0]).config["preprocessed"])
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ens = load_ensemble([current.fold(k).checkpoint for k in folds], device)
    ds = model_samples(PngDataset(holdout, dict(zip(manifest.image_id.astype(str), manifest.abs_path)),
                                  ens.preprocess.size), holdout, ens.models)
    loader = create_loader(ds, batch_size or ens.batch_size, ens.workers if workers is None else workers)
    preds = ds.image_predictions(predict_loader(ens.models, loader, len(ds), device, resolve_amp(ens.amp, device),
                                                channels_last=device.type == "cuda"))
    images = holdout.assign(pred=preds, folds=len(folds))
    images.to_csv(paths.holdout_predictions_csv(run), index=False)
    return images


def holdout_breasts(run, aggregate: str, folds=None) -> pd.DataFrame:
    """Per-breast holdout probabilities of the fold ensemble (empty when the run has no holdout)."""
    holdout, _ = read_holdout(run)
    if holdout.empty:
        print("no holdout (holdout_fraction 0): only the out-of-fold figures are estimates")
        return pd.DataFrame({"prediction_id": [], "cancer": [], "pred": []})
    images = predict_holdout(run, folds)
    from ..learn.sampling import data_breast_prevalence

    return with_unreadable(images, aggregate, data_breast_prevalence(paths.folds_csv(run)))


def with_unreadable(images: pd.DataFrame, aggregate: str, prior: float) -> pd.DataFrame:
    """Per-breast probabilities (images without one, NaN, left out of their breasts) where a breast whose
    images all failed is kept, never dropped: it gets ``prior`` (the data's prevalence, as a submission
    gives it) and is named in one line with the count."""
    from ..tables import with_prediction_id

    images = with_prediction_id(images)
    failed = images.pred.isna()
    breasts = metrics.aggregate_breasts(images[~failed], how=aggregate)
    every = metrics.aggregate_breasts(images.assign(pred=0.0), how=aggregate)
    lost = every[~every.prediction_id.isin(breasts.prediction_id)]
    if failed.any():
        print(f"{int(failed.sum())} holdout image(s) have no preprocessed file: left out of their breasts")
    if len(lost):
        print(f"{len(lost)} holdout breast(s) have no readable image ({', '.join(map(str, lost.prediction_id[:10]))}): "
              f"kept, at the data's prevalence {prior:.4f}, as a submission predicts them")
        breasts = pd.concat([breasts, lost.assign(pred=prior)], ignore_index=True)
    return breasts


def clean(d):
    """NaN -> None, numpy numbers and booleans -> Python ones, recursively (for JSON)."""
    if isinstance(d, dict):
        return {k: clean(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [clean(v) for v in d]
    if isinstance(d, (np.floating, float)):
        return None if d != d else float(d)
    if isinstance(d, np.integer):
        return int(d)
    if isinstance(d, np.bool_):
        return bool(d)
    return d


def summarize(selection: dict, oof: dict, holdout: dict | None, holdout_info: dict) -> dict:
    """The ``estimates`` object of evaluation.json and summary.json: which figure is which."""
    out = {"selection": {**{k: selection.get(k) for k in ("auc", "pf1", "pr_auc", "threshold", "sensitivity",
                                                          "specificity", "breasts", "positives", "best_epoch", "fold")},
                         "measured_on": selection.get("measured_on"), "note": SELECTION_NOTE},
           "oof": {**oof, "measured_on": paths.oof_csv("").name,
                   "note": "out of fold: every trained fold's validation breasts, threshold chosen on them"}}
    if holdout and holdout.get("breasts"):
        out["holdout"] = {**holdout, "fingerprint": holdout_info.get("fingerprint"),
                          "measured_on": paths.holdout_predictions_csv("").name,
                          "note": "locked holdout: the fold ensemble at the OOF threshold; quote this one"}
    return clean(out)


def side_by_side(estimates: dict) -> pd.DataFrame:
    """One row per estimate (selection, OOF, holdout, synthetic test) with AUC, pF1 and intervals."""
    rows = []
    for name, e in estimates.items():
        ci = lambda k: (f"[{e[k][0]:.3f}, {e[k][1]:.3f}]" if e.get(k) and None not in e[k] else "")  # noqa: E731
        rows.append({"estimate": name, "auc": e.get("auc"), "auc_95ci": ci("auc_ci"), "pf1": e.get("pf1"),
                     "pf1_95ci": ci("pf1_ci"), "pr_auc": e.get("pr_auc"), "threshold": e.get("threshold"),
                     "breasts": e.get("breasts"), "cancer_breasts": e.get("cancer_breasts", e.get("positives")),
                     "what it is": e.get("note", "")})
    return pd.DataFrame(rows)

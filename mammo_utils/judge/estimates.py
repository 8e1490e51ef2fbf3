"""Honest estimates on any dataset: a locked holdout, out-of-fold predictions, and the figures of both.

* **Holdout.** Patients set aside before anything else, grouped by patient and stratified by cancer
  and site, per source for combined datasets: within each stratum the patients are ordered by a hash
  of ``(seed, patient_id)`` and the first ``round(fraction * n)`` are taken. So the holdout is a function of the patient ids, the
  fraction and the seed only, and its fingerprint (a hash of its sorted patient ids, the fraction and
  the seed) says whether two runs were judged on the same patients. A dataset (or, combined, a
  source) with an official test split that has labels (``official_split == "test"``) uses that
  split instead.
* **Out of fold.** Every fold's validation predictions of its best epoch, pooled: every image of the
  non-holdout data once. The decision threshold is chosen on the pooled OOF breasts.
* **Holdout figures.** The fold ensemble (mean of the folds' probabilities) predicts the holdout
  images from the run's own preprocessed files, breasts are aggregated as the run trained, and the OOF
  threshold is applied unchanged: nothing about these breasts was chosen by looking at them.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from .. import metrics, paths, tables
from ..errors import UserError
from .bootstrap import interval, resamples

SELECTION_NOTE = "optimistic: the best epoch and the threshold were chosen on these breasts"


# ---- the holdout -------------------------------------------------------------------------------------

def _rank(seed: int, patient_id) -> str:
    return hashlib.sha1(f"{seed}:{patient_id}".encode()).hexdigest()


def fingerprint(patient_ids, fraction: float, seed: int) -> str:
    """A short hash of the holdout's sorted patient ids, its fraction and its seed."""
    ids = ",".join(sorted(str(p) for p in set(patient_ids)))
    return hashlib.sha1(f"{ids}|{fraction:g}|{seed}".encode()).hexdigest()[:16]


def split_holdout(df: pd.DataFrame, fraction: float = 0.15, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(holdout rows, the other rows, description with the fingerprint). See the module docstring."""
    if not 0 <= fraction < 1:
        raise UserError(f"holdout_fraction must be in [0, 1), got {fraction}")
    chosen, hows = set(), []
    for source, part in (df.groupby(df.source.fillna(""), sort=True) if "source" in df else [("", df)]):
        label = f"{source}: " if source else ""
        if "official_split" in part and (part.official_split == "test").any():
            chosen |= set(part[part.official_split == "test"].patient_id)
            hows.append(f"{label}the dataset's official test split")
            continue
        extra = {"site_id": ("site_id", "first")} if "site_id" in part else {}
        patients = part.groupby("patient_id").agg(cancer=("cancer", "max"), **extra).fillna("")
        for _, stratum in patients.groupby(list(patients.columns)):
            order = sorted(stratum.index, key=lambda p: _rank(seed, p))
            chosen |= set(order[:int(round(fraction * len(order)))])
        hows.append(f"{label}{fraction:g} of the patients, stratified by cancer{''.join(', ' + c for c in extra)}, "
                    f"seed {seed}")
    how = "; ".join(hows)
    is_holdout = df.patient_id.isin(chosen)
    holdout, rest = df[is_holdout].reset_index(drop=True), df[~is_holdout].reset_index(drop=True)
    if fraction and rest.patient_id.nunique() < 2:
        raise UserError(f"holdout_fraction {fraction} leaves {rest.patient_id.nunique()} patient(s) to train on")
    info = {"fingerprint": fingerprint(chosen, fraction, seed), "fraction": fraction, "seed": seed, "how": how,
            "patients": len(chosen), "images": int(is_holdout.sum()),
            "cancer_breasts": int(metrics.aggregate_breasts(holdout.assign(pred=0.0)).cancer.sum()) if len(holdout) else 0}
    return holdout, rest, info


def write_holdout(run, holdout: pd.DataFrame, info: dict) -> Path:
    """``<run>/holdout.csv`` (its images, with patient_id and image_id) and ``<run>/holdout.json``."""
    keep = [c for c in ("patient_id", "image_id", "laterality", "view", "site_id", "machine_id", "age", "implant",
                        "source", "cancer")
            if c in holdout]
    Path(run).mkdir(parents=True, exist_ok=True)
    holdout[keep].to_csv(paths.holdout_csv(run), index=False)
    paths.holdout_json(run).write_text(json.dumps(info, indent=2))
    return paths.holdout_csv(run)


def read_holdout(run) -> tuple[pd.DataFrame, dict]:
    if not paths.holdout_csv(run).exists():
        raise UserError(f"{paths.holdout_csv(run)} not found: run notebook 03 (it sets the holdout aside)")
    return tables.read_csv(paths.holdout_csv(run)), json.loads(paths.holdout_json(run).read_text())


# ---- folds -------------------------------------------------------------------------------------------

def fold_list(folds, n_splits: int) -> list[int]:
    """``"all"`` or a list (or one number) of folds, checked against ``n_splits``."""
    chosen = list(range(n_splits)) if folds in ("all", None) else [folds] if isinstance(folds, int) else list(folds)
    bad = [k for k in chosen if not isinstance(k, int) or not 0 <= k < n_splits]
    if bad or not chosen:
        raise UserError(f"folds must be 'all' or a list of folds in 0..{n_splits - 1}, got {folds!r}")
    return sorted(set(chosen))


def trained_folds(run) -> list[int]:
    """The folds of a run that have a best checkpoint."""
    return sorted(int(p.parent.name[len("fold"):]) for p in paths.train_root(run).glob(f"fold*/{paths.BEST}"))


def collect_oof(run, folds=None) -> pd.DataFrame:
    """Every trained fold's validation predictions (best epoch) with their ``fold``: each image of the
    non-holdout data once, when every fold was trained. Written to ``<run>/oof_predictions.csv``."""
    folds = trained_folds(run) if folds is None else folds
    if not folds:
        raise UserError(f"no trained fold under {paths.train_root(run)}: run notebook 04 first")
    parts = [tables.read_csv(paths.train_dir(run, k) / paths.VAL_PREDICTIONS).assign(fold=k) for k in folds]
    oof = pd.concat(parts, ignore_index=True)
    if not oof.image_id.is_unique:
        raise UserError(f"{run}: an image is in the validation of two folds: folds.csv changed between folds?")
    oof.to_csv(paths.oof_csv(run), index=False)
    return oof


# ---- figures -----------------------------------------------------------------------------------------

def estimate(breasts: pd.DataFrame, threshold: float, n_boot: int = 1000, seed: int = 0) -> dict:
    """AUC, PR-AUC and pF1 at ``threshold`` per breast, each with a 95 % bootstrap interval over breasts."""
    y, p = breasts.cancer.to_numpy(), breasts.pred.to_numpy()
    out = {"threshold": float(threshold), "breasts": int(len(y)), "cancer_breasts": int(np.sum(y))}
    if not len(y):
        return {**out, **{k: float("nan") for k in ("auc", "pr_auc", "pf1")},
                **{f"{k}_ci": [float("nan")] * 2 for k in ("auc", "pr_auc", "pf1")}}
    idx = resamples(len(y), n_boot, seed)
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
        if saved is not None and saved != expected:
            raise UserError(f"fold {k} of {run} was trained beside another holdout ({saved}, now {expected}): train "
                            f"the folds again (notebook 04) before judging them on this one")


def predict_holdout(run, folds=None, batch_size: int = 16, workers: int = 0) -> pd.DataFrame:
    """Image probabilities of the holdout: the mean of the trained folds' probabilities, read from the
    PNGs the run trained on (preprocessing is reused, never repeated; an image that failed it stays
    NaN). Written to ``<run>/holdout_predictions.csv``."""
    import torch
    from torch.utils.data import DataLoader

    from ..learn.engine import predict_loader
    from ..tables import read_manifest
    from .inference import PngDataset, load_ensemble, model_samples

    holdout, info = read_holdout(run)
    folds = trained_folds(run) if folds is None else folds
    if holdout.empty:
        raise UserError(f"{paths.holdout_csv(run)} is empty: holdout_fraction was 0")
    check_fingerprints(run, folds, info["fingerprint"])
    if not folds:
        raise UserError(f"no trained fold under {paths.train_root(run)}: run notebook 04 first")
    config = json.loads((paths.train_dir(run, folds[0]) / paths.CONFIG).read_text())
    manifest = read_manifest(config["preprocessed"])
    ens = load_ensemble([paths.train_dir(run, k) / paths.BEST for k in folds], "cpu")
    ds = model_samples(PngDataset(holdout, dict(zip(manifest.image_id.astype(str), manifest.abs_path)),
                                  ens.preprocess.size), holdout, ens.models)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers)
    preds = ds.image_predictions(predict_loader(ens.models, loader, len(ds), torch.device("cpu")))
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
    failed = int(images.pred.isna().sum())
    if failed:
        print(f"{failed} holdout image(s) have no preprocessed file: left out of their breasts")
    return metrics.aggregate_breasts(images.dropna(subset=["pred"]), how=aggregate)


def clean(d):
    """NaN -> None, numpy numbers -> Python numbers, recursively (for JSON)."""
    if isinstance(d, dict):
        return {k: clean(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [clean(v) for v in d]
    if isinstance(d, (np.floating, float)):
        return None if d != d else float(d)
    if isinstance(d, np.integer):
        return int(d)
    return d


def summarize(selection: dict, oof: dict, holdout: dict | None, holdout_info: dict) -> dict:
    """The ``estimates`` object of evaluation.json and summary.json: which figure is which."""
    out = {"selection": {**{k: selection.get(k) for k in ("auc", "pf1", "pr_auc", "threshold", "breasts", "positives",
                                                          "best_epoch")}, "note": SELECTION_NOTE},
           "oof": {**oof, "note": "out of fold: every trained fold's validation breasts, threshold chosen on them"}}
    if holdout and holdout.get("breasts"):
        out["holdout"] = {**holdout, "fingerprint": holdout_info.get("fingerprint"),
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

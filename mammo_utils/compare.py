"""Comparing runs of a sweep with honest statistics.

Each run is scored on the labelled held-out test set (the synthetic generator's side file): those
breasts took part in no training, epoch selection or threshold choice, and every run predicts the
same ones, so differences between recipes can be bootstrapped *paired* over breasts. The validation
figures (best epoch and threshold chosen on them) are shown beside, labelled as selection figures.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import metrics, paths
from .errors import UserError

METRICS = {"auc": metrics.auc, "pr_auc": metrics.pr_auc, "pf1": metrics.pfbeta}


def paired_bootstrap(labels, pred_a, pred_b, metric: str = "auc", n: int = 2000, seed: int = 0,
                     indices: np.ndarray | None = None) -> dict:
    """Difference ``metric(a) - metric(b)`` on the same breasts, with a percentile 95 % interval.

    Breasts are resampled with replacement, the same resample for both runs (that is what makes it
    paired). ``indices`` (resamples x breasts) replaces the random draws, e.g. to enumerate them all.
    Resamples with a single class (AUC undefined) are left out.
    """
    y, a, b = np.asarray(labels), np.asarray(pred_a, dtype=np.float64), np.asarray(pred_b, dtype=np.float64)
    if not (len(y) == len(a) == len(b)):
        raise UserError(f"paired bootstrap needs the same breasts: {len(y)}, {len(a)}, {len(b)}")
    fn = METRICS[metric]
    if indices is None:
        indices = np.random.default_rng(seed).integers(0, len(y), size=(n, len(y)))
    diffs = np.array([fn(y[i], a[i]) - fn(y[i], b[i]) for i in indices], dtype=np.float64)
    diffs = diffs[np.isfinite(diffs)]
    lo, hi = (np.percentile(diffs, [2.5, 97.5]) if len(diffs) else (np.nan, np.nan))
    return {"diff": fn(y, a) - fn(y, b), "ci_low": float(lo), "ci_high": float(hi), "resamples": int(len(diffs)),
            "significant": bool(len(diffs) and (lo > 0 or hi < 0))}


def read_run(run_dir) -> dict:
    """One finished run: its summary, its parameters and its per-breast test predictions."""
    run = Path(run_dir)
    summary = json.loads(paths.summary_json(run).read_text())
    sweep = json.loads((run / "sweep_params.json").read_text()) if (run / "sweep_params.json").exists() else {}
    return {"run": run.name, **sweep, "summary": summary}


def test_breasts(data, run_dir) -> pd.DataFrame:
    """Per-breast test probabilities (mean over images) with the true labels of the synthetic side file."""
    from .tables import with_prediction_id

    truth = pd.read_csv(paths.synthetic_truth(data))
    truth = with_prediction_id(truth[truth.split == "test"])
    labels = truth.groupby("prediction_id").cancer.max()
    images = pd.read_csv(paths.image_predictions_csv(paths.submission_csv(run_dir)), dtype={"prediction_id": str})
    probs = images.groupby("prediction_id").pred.mean()
    sub = pd.read_csv(paths.submission_csv(run_dir), dtype={"prediction_id": str}).set_index("prediction_id").cancer
    return pd.DataFrame({"cancer": labels, "pred": probs.reindex(labels.index).fillna(0.0),
                         "binary": sub.reindex(labels.index).fillna(0.0)})


def collect(sweep_dir) -> pd.DataFrame:
    """One row per finished run of a sweep folder: combination, seed, selection and held-out metrics."""
    rows = []
    for s in sorted(Path(sweep_dir).glob("*/summary.json")):
        r = read_run(s.parent)
        if not r.get("combination"):
            continue
        summ = r["summary"]
        rows.append({"run": r["run"], "combination": r["combination"], "seed": r.get("seed"),
                     "control": bool(r.get("control")), "params": json.dumps(r.get("params", {}), sort_keys=True),
                     "val_auc": summ.get("val_auc"), "val_pf1": summ.get("val_pf1"), "val_pr_auc": summ.get("val_pr_auc"),
                     "test_auc": summ.get("test_auc"), "test_pf1": summ.get("test_pf1"),
                     "test_pr_auc": summ.get("test_pr_auc"), "test_breasts": summ.get("test_breasts"),
                     "test_positives": summ.get("test_positives"), "best_epoch": summ.get("best_epoch"),
                     "minutes": round(summ.get("total_seconds", 0) / 60, 1)})
    if not rows:
        raise UserError(f"no finished sweep run under {sweep_dir}")
    return pd.DataFrame(rows)


def combination_table(runs: pd.DataFrame, sweep_dir, data, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Mean over seeds per combination, with 95 % intervals from a bootstrap over test breasts
    (the same resamples for every seed of a combination; the seed spread is reported beside)."""
    rows = []
    for combo, g in runs.groupby("combination", sort=False):
        breasts = [test_breasts(data, Path(sweep_dir) / r) for r in g.run]
        y = breasts[0].cancer.to_numpy()
        idx = np.random.default_rng(seed).integers(0, len(y), size=(n_boot, len(y)))
        row = {"combination": combo, "control": bool(g.control.any()), "seeds": len(g), "runs": ", ".join(g.run)}
        for name, col, fn in (("test_auc", "pred", metrics.auc), ("test_pr_auc", "pred", metrics.pr_auc),
                              ("test_pf1", "binary", metrics.pfbeta)):
            per_seed = np.array([fn(y, b[col].to_numpy()) for b in breasts])
            boot = np.array([np.mean([fn(y[i], b[col].to_numpy()[i]) for b in breasts]) for i in idx])
            boot = boot[np.isfinite(boot)]
            row[name] = float(np.mean(per_seed))
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = (float(v) for v in np.percentile(boot, [2.5, 97.5]))
            row[f"{name}_seed_sd"] = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else float("nan")
        for name in ("val_auc", "val_pf1", "val_pr_auc"):
            vals = g[name].astype(float).to_numpy()
            row[name] = float(np.mean(vals))
            half = 1.96 * np.std(vals, ddof=1) / np.sqrt(len(vals)) if len(vals) > 1 else float("nan")
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = row[name] - half, row[name] + half
        row["test_breasts"], row["test_positives"] = int(g.test_breasts.iloc[0]), int(g.test_positives.iloc[0])
        row["minutes_per_run"] = float(g.minutes.mean())
        rows.append(row)
    return pd.DataFrame(rows)


def paired_table(runs: pd.DataFrame, sweep_dir, data, baseline: str | None = None, metric: str = "auc",
                 n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Each combination against ``baseline``: seed-averaged predictions per breast, paired bootstrap."""
    combos = list(dict.fromkeys(runs.combination))
    baseline = baseline or combos[0]
    if baseline not in combos:
        raise UserError(f"baseline {baseline!r} is not a combination of this sweep: {combos}")

    def averaged(combo):
        breasts = [test_breasts(data, Path(sweep_dir) / r) for r in runs[runs.combination == combo].run]
        return breasts[0].cancer.to_numpy(), np.mean([b.pred.to_numpy() for b in breasts], axis=0)

    y, base = averaged(baseline)
    rows = []
    for combo in combos:
        if combo == baseline:
            continue
        _, pred = averaged(combo)
        rows.append({"combination": combo, "baseline": baseline, "metric": f"test_{metric}",
                     **paired_bootstrap(y, pred, base, metric, n_boot, seed)})
    return pd.DataFrame(rows)


def learning_curves(runs: pd.DataFrame, sweep_dir) -> pd.DataFrame:
    """metrics.csv of every run (fold 0), with its combination and seed, for an overlaid plot."""
    parts = []
    for r in runs.itertuples():
        path = paths.train_dir(Path(sweep_dir) / r.run, 0) / paths.METRICS
        if path.exists():
            parts.append(pd.read_csv(path).assign(combination=r.combination, seed=r.seed, run=r.run))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def write_comparison(sweep_dir, table: pd.DataFrame) -> Path:
    """``<sweep>/comparison.csv``: one row per combination with interval columns."""
    path = Path(sweep_dir) / "comparison.csv"
    table.to_csv(path, index=False)
    return path

"""Comparing runs of a sweep with honest statistics.

Each run is scored on the labelled held-out test set (the synthetic generator's side file): those
breasts took part in no training, epoch selection or threshold choice, and every run predicts the
same ones, so differences between recipes can be bootstrapped *paired* over breasts. The validation
figures (best epoch and threshold chosen on them) are shown beside, labelled as selection figures.

One statistic per name, everywhere in this module, its tables and its figures:

* ``auc``     ROC AUC of the per-breast probabilities, aggregated as each run trained (mean or max);
* ``pr_auc``  average precision of the same probabilities;
* ``pf1``     pF1 of the per-breast predictions binarized at the run's own threshold (its submission);
* ``_seed_mean`` (combination tables): the mean of that statistic over the seeds of a combination.
  Its interval and the paired difference resample the same breasts for every seed, so the difference
  of two rows of the table is exactly the difference the paired table estimates.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import metrics, paths
from .bootstrap import interval, paired_difference, resamples
from .errors import UserError

# statistic -> (the per-breast column it reads, the function)
STATISTICS = {"auc": ("pred", metrics.auc), "pr_auc": ("pred", metrics.pr_auc), "pf1": ("binary", metrics.pfbeta)}


def statistic(name: str):
    """(column, function) of a statistic's name."""
    if name not in STATISTICS:
        raise UserError(f"metric must be one of {sorted(STATISTICS)}, got {name!r}")
    return STATISTICS[name]


def paired_bootstrap(labels, pred_a, pred_b, metric: str = "auc", n: int = 2000, seed: int = 0,
                     indices: np.ndarray | None = None) -> dict:
    """Difference ``metric(a) - metric(b)`` of two runs on the same breasts (see :mod:`.bootstrap`)."""
    return paired_difference(statistic(metric)[1], labels, pred_a, pred_b, n, seed, indices=indices)


def read_run(run_dir) -> dict:
    """One finished run: its summary, its parameters and its per-breast test predictions."""
    run = Path(run_dir)
    summary = json.loads(paths.summary_json(run).read_text())
    sweep = json.loads(paths.sweep_params(run).read_text()) if paths.sweep_params(run).exists() else {}
    return {"run": run.name, **sweep, "summary": summary}


def run_aggregation(run_dir) -> str:
    """How a run aggregates image predictions per breast: its saved decision, else its training config."""
    root = paths.train_root(Path(run_dir))
    for path in sorted(root.glob(f"*/{paths.THRESHOLD}")) + sorted(root.glob(f"*/{paths.CONFIG}")):
        how = json.loads(path.read_text()).get("aggregate")
        if how:
            return how
    return "mean"


def test_breasts(data, run_dir) -> pd.DataFrame:
    """Per-breast test probabilities (aggregated as the run trained) and the run's binarized
    predictions, with the true labels of the synthetic side file. A test breast without a
    prediction is an error that names it: it is never scored as 0."""
    from .tables import with_prediction_id

    truth = pd.read_csv(paths.synthetic_truth(data), dtype={"patient_id": str, "image_id": str})
    truth = with_prediction_id(truth[truth.split == "test"])
    labels = truth.groupby("prediction_id").cancer.max()
    images = pd.read_csv(paths.image_predictions_csv(paths.submission_csv(run_dir)), dtype={"prediction_id": str})
    probs = metrics.aggregate_breasts(images.dropna(subset=["pred"]), how=run_aggregation(run_dir)).set_index(
        "prediction_id").pred
    sub = pd.read_csv(paths.submission_csv(run_dir), dtype={"prediction_id": str}).set_index("prediction_id").cancer
    missing = sorted((set(labels.index) - set(probs.index)) | (set(labels.index) - set(sub.index)))
    if missing:
        raise UserError(f"{run_dir}: {len(missing)} test breast(s) have no prediction: {', '.join(missing[:10])}"
                        f"{' ...' if len(missing) > 10 else ''}")
    return pd.DataFrame({"cancer": labels, "pred": probs.reindex(labels.index), "binary": sub.reindex(labels.index)})


def collect(sweep_dir, runs=None) -> pd.DataFrame:
    """One row per finished run of a sweep folder: combination, seed, selection and held-out metrics.

    ``runs``: the run folders of the current grid; finished runs of earlier grids in the same folder
    are then left out and named in one line."""
    rows = []
    found = sorted(Path(sweep_dir).glob("*/summary.json"))
    if runs is not None:
        stale = [s.parent.name for s in found if s.parent.name not in set(runs)]
        if stale:
            print(f"left out {len(stale)} run(s) of earlier grids: {', '.join(stale)}")
        found = [s for s in found if s.parent.name in set(runs)]
    for s in found:
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
    """Per combination, each statistic's mean over seeds (``test_<stat>_seed_mean``) with a 95 %
    interval from a bootstrap over test breasts (one resample serves every seed) and the seed spread."""
    rows = []
    for combo, g in runs.groupby("combination", sort=False):
        breasts = [test_breasts(data, Path(sweep_dir) / r) for r in g.run]
        y = breasts[0].cancer.to_numpy()
        idx = resamples(len(y), n_boot, seed)
        row = {"combination": combo, "control": bool(g.control.any()), "seeds": len(g), "runs": ", ".join(g.run)}
        for name, (col, fn) in STATISTICS.items():
            per_seed = np.array([fn(y, b[col].to_numpy()) for b in breasts])
            key = f"test_{name}_seed_mean"
            row[key] = float(np.mean(per_seed))
            row[f"{key}_ci_low"], row[f"{key}_ci_high"] = interval(fn, y, *[b[col] for b in breasts], indices=idx)
            row[f"test_{name}_seed_sd"] = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else float("nan")
        for name in ("auc", "pf1", "pr_auc"):
            vals = g[f"val_{name}"].astype(float).to_numpy()
            key = f"val_{name}_seed_mean"
            row[key] = float(np.mean(vals))
            half = 1.96 * np.std(vals, ddof=1) / np.sqrt(len(vals)) if len(vals) > 1 else float("nan")
            row[f"{key}_ci_low"], row[f"{key}_ci_high"] = row[key] - half, row[key] + half
        row["test_breasts"], row["test_positives"] = int(g.test_breasts.iloc[0]), int(g.test_positives.iloc[0])
        row["minutes_per_run"] = float(g.minutes.mean())
        rows.append(row)
    return pd.DataFrame(rows)


def paired_table(runs: pd.DataFrame, sweep_dir, data, baseline: str | None = None, metric: str = "auc",
                 n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Each combination against ``baseline``: the difference of ``test_<metric>_seed_mean`` (the
    combination table's column), with a paired bootstrap over the same test breasts."""
    col, fn = statistic(metric)
    combos = list(dict.fromkeys(runs.combination))
    baseline = baseline or combos[0]
    if baseline not in combos:
        raise UserError(f"baseline {baseline!r} is not a combination of this sweep: {combos}")

    def per_seed(combo):
        breasts = [test_breasts(data, Path(sweep_dir) / r) for r in runs[runs.combination == combo].run]
        return breasts[0].cancer.to_numpy(), [b[col].to_numpy() for b in breasts]

    y, base = per_seed(baseline)
    rows = []
    for combo in combos:
        if combo == baseline:
            continue
        _, preds = per_seed(combo)
        rows.append({"combination": combo, "baseline": baseline, "metric": f"test_{metric}_seed_mean",
                     **paired_difference(fn, y, preds, base, n_boot, seed)})
    return pd.DataFrame(rows)


def learning_curves(runs: pd.DataFrame, sweep_dir) -> pd.DataFrame:
    """metrics.csv of every run (fold 0), with its combination and seed, for an overlaid plot."""
    parts = []
    for r in runs.itertuples():
        path = paths.train_dir(Path(sweep_dir) / r.run, 0) / paths.METRICS
        if path.exists():
            parts.append(pd.read_csv(path).assign(combination=r.combination, seed=r.seed, run=r.run))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def write_comparison(sweep_dir, table: pd.DataFrame, failed=()) -> Path:
    """``<sweep>/comparison.csv``: one row per combination with interval columns (``status`` finished),
    and one row per failed run (``status`` failed, no figures)."""
    path = paths.comparison_csv(sweep_dir)
    out = table.assign(status="finished")
    if failed:
        out = pd.concat([out, pd.DataFrame({"runs": list(failed), "status": "failed",
                                            "combination": [f.rsplit("_seed", 1)[0] for f in failed]})],
                        ignore_index=True)
    out.to_csv(path, index=False)
    return path

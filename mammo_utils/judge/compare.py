"""Comparing runs of a sweep with honest statistics.

Each run is scored on breasts that took part in no training, epoch selection or threshold choice,
and every run predicts the same ones, so differences between recipes can be bootstrapped *paired*
over the same patients. The target is the run's locked **holdout** (any dataset: its patients are set by
``holdout_fraction`` and ``holdout_seed``, and runs whose holdout fingerprints differ are refused),
or the **synthetic test** set where the generator's labels exist; one code path serves both. The
out-of-fold and validation (selection) figures are shown beside.

One statistic per name, everywhere in this module, its tables and its figures:

* ``auc``     ROC AUC of the per-breast probabilities, aggregated as each run trained (mean or max);
* ``pr_auc``  average precision of the same probabilities;
* ``pf1``     pF1 of the per-breast predictions binarized at the run's own threshold (its submission);
* ``sens_at_spec`` sensitivity of the breasts at the lowest threshold that keeps specificity at the
  BCSC radiologists' 88.9 % on them (a point of each run's ROC curve): recipes compared where a
  screening programme would run them;
* ``<target>_<stat>`` where target is ``holdout`` or ``test`` (the synthetic test set);
* ``_seed_mean`` (combination tables): the mean of that statistic over the seeds of a combination.
  Its interval and the paired difference resample the same breasts for every seed, so the difference
  of two rows of the table is exactly the difference the paired table estimates.

Runs are matched breast by breast on ``prediction_id`` (never by row position: two runs may list their
breasts in different orders), and every resample draws *patients*, both breasts of each together.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .. import metrics, paths, tables
from ..errors import UserError
from ..learn.runs import Run
from .bootstrap import interval, paired_difference, patient_groups, resamples
from .screening import sensitivity_at_specificity

# statistic -> (the per-breast column it reads, the function)
STATISTICS = {"auc": ("pred", metrics.auc), "pr_auc": ("pred", metrics.pr_auc), "pf1": ("binary", metrics.pfbeta),
              "sens_at_spec": ("pred", sensitivity_at_specificity)}


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
    """How a run aggregates image predictions per breast: as notebook 05 decided (evaluation.json), else as
    its current folds trained."""
    run = Run(run_dir)
    return run.evaluation().get("aggregate") or run.recipe().get("aggregate") or "mean"


TARGETS = {"holdout": "holdout", "synthetic_test": "test"}  # target -> the prefix of its columns


def prefix(target: str) -> str:
    if target not in TARGETS:
        raise UserError(f"target must be one of {sorted(TARGETS)}, got {target!r}")
    return TARGETS[target]


def run_threshold(run_dir) -> float:
    """The threshold notebook 05 chose out of fold and the run's ensemble applies (evaluation.json), never a
    fold folder's own threshold.json: a fold of an earlier recipe may still hold an older one."""
    threshold = Run(run_dir).evaluation().get("threshold")
    if threshold is None:
        raise UserError(f"{run_dir}: no threshold in {paths.evaluation_json(run_dir).name}: run notebook 05")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise UserError(f"{paths.evaluation_json(run_dir)}: threshold {threshold!r} is not a probability in [0, 1] "
                        f"(NaN never is): run notebook 05 again")
    return float(threshold)


def stacked_breasts(run_dir) -> pd.DataFrame:
    """The run's stacked holdout breasts (notebook 05: OOF probability + metadata), decided at the
    stacker's own threshold (chosen on its cross-validated OOF predictions)."""
    path = paths.stacking_csv(run_dir)
    if not path.exists():
        raise UserError(f"{path} not found: the run has no stacking predictions (notebook 05 writes them)")
    breasts = tables.read_csv(path).set_index("prediction_id")
    threshold = Run(run_dir).evaluation()["estimates"]["stacking"]["threshold"]
    return pd.DataFrame({"cancer": breasts.cancer, "pred": breasts.pred,
                         "binary": (breasts.pred >= threshold).astype(float)})


def with_stacking(runs: pd.DataFrame, sweep_dir) -> pd.DataFrame:
    """``runs`` plus, for every run whose notebook 05 stacked its predictions, a row of the
    combination ``<combination> + stacking`` (``variant`` stacking) that reads those."""
    runs = runs.assign(variant=runs["variant"] if "variant" in runs else "network")
    has_stacking = np.array([paths.stacking_csv(Path(sweep_dir) / r).exists() for r in runs.run], bool)
    stacked = runs[has_stacking & (runs.variant == "network").to_numpy()]
    extra = stacked.assign(combination=stacked.combination + " + stacking", variant="stacking")
    return pd.concat([runs, extra], ignore_index=True)


def holdout_breasts(run_dir, variant: str = "network") -> pd.DataFrame:
    """Per-breast holdout probabilities of the run's fold ensemble (aggregated as notebook 05 decided), its
    decisions at its own OOF threshold, and the true labels (``variant`` stacking: :func:`stacked_breasts`)."""
    if variant == "stacking":
        return stacked_breasts(run_dir)
    path = paths.holdout_predictions_csv(run_dir)
    if not path.exists():
        raise UserError(f"{path} not found: the run has no holdout predictions (notebook 05 writes them)")
    images = tables.read_csv(path)
    missing = sorted(images[images.pred.isna()].image_id.astype(str))
    breasts = metrics.aggregate_breasts(images.dropna(subset=["pred"]), how=run_aggregation(run_dir))
    lost = sorted(set(metrics.aggregate_breasts(images.assign(pred=0.0)).prediction_id) - set(breasts.prediction_id))
    if lost:
        raise UserError(f"{run_dir}: {len(lost)} holdout breast(s) have no prediction: {', '.join(lost[:10])} "
                        f"(images {', '.join(missing[:10])})")
    breasts = breasts.set_index("prediction_id")
    return pd.DataFrame({"cancer": breasts.cancer, "pred": breasts.pred,
                         "binary": (breasts.pred >= run_threshold(run_dir)).astype(float)})


def target_breasts(data, run_dir, target: str = "holdout", variant: str = "network") -> pd.DataFrame:
    """The breasts a comparison scores, for one run: its holdout or the synthetic test set."""
    prefix(target)
    if variant != "network" and target != "holdout":
        raise UserError(f"the {variant} variant is judged on the holdout only")
    return holdout_breasts(run_dir, variant) if target == "holdout" else test_breasts(data, run_dir)


def _variants(g: pd.DataFrame) -> list[str]:
    return list(g.variant) if "variant" in g else ["network"] * len(g)


def aligned(breasts: list[pd.DataFrame], order: pd.Index | None = None) -> list[pd.DataFrame]:
    """The runs' breasts in one order (``order``, else the first run's), matched on ``prediction_id``:
    never by row position. Runs that predicted other breasts, or label one differently, are refused
    in one line that names them."""
    order = breasts[0].index if order is None else order
    for b in breasts:
        differ = sorted(set(order).symmetric_difference(b.index))
        if differ:
            raise UserError(f"runs predicted different breasts ({len(differ)}: {', '.join(map(str, differ[:10]))}): "
                            f"compare runs of the same data and holdout")
    out = [b.loc[order] for b in breasts]
    labels = np.column_stack([b.cancer.to_numpy() for b in out])
    relabelled = [str(i) for i in order[(labels != labels[:, :1]).any(axis=1)]]
    if relabelled:
        raise UserError(f"runs disagree on the label of breast(s) {', '.join(relabelled[:10])}: not the same data")
    return out


def holdout_fingerprint(run_dir) -> str | None:
    path = paths.holdout_json(run_dir)
    return json.loads(path.read_text()).get("fingerprint") if path.exists() else None


def check_same_holdout(runs: pd.DataFrame) -> str:
    """Runs are compared on one holdout only; returns its fingerprint or raises in one line."""
    prints = sorted(set(runs.holdout_fingerprint.dropna()))
    if len(prints) > 1 or runs.holdout_fingerprint.isna().any():
        raise UserError(f"these runs were judged on different holdouts (fingerprints {prints}"
                        f"{', and none' if runs.holdout_fingerprint.isna().any() else ''}): compare runs made with "
                        f"the same holdout_fraction and holdout_seed")
    return prints[0]


def test_breasts(data, run_dir) -> pd.DataFrame:
    """Per-breast test probabilities (aggregated as the run decided) and the run's binarized
    predictions, with the true labels of the synthetic side file. A test breast without a
    prediction is an error that names it: it is never scored as 0."""
    from ..tables import with_prediction_id

    truth = tables.read_csv(paths.synthetic_truth(data))
    truth = with_prediction_id(truth[truth.split == "test"])
    labels = truth.groupby("prediction_id").cancer.max()
    images = tables.read_csv(paths.image_predictions_csv(paths.submission_csv(run_dir)))
    probs = metrics.aggregate_breasts(images.dropna(subset=["pred"]), how=run_aggregation(run_dir)).set_index(
        "prediction_id").pred
    sub = tables.read_csv(paths.submission_csv(run_dir)).set_index("prediction_id").cancer
    missing = sorted((set(labels.index) - set(probs.index)) | (set(labels.index) - set(sub.index)))
    if missing:
        raise UserError(f"{run_dir}: {len(missing)} test breast(s) have no prediction: {', '.join(missing[:10])}"
                        f"{' ...' if len(missing) > 10 else ''}")
    return pd.DataFrame({"cancer": labels, "pred": probs.reindex(labels.index), "binary": sub.reindex(labels.index)})


def collect(sweep_dir, runs=None, stacking: bool = False, target: str = "holdout") -> pd.DataFrame:
    """One row per finished run of a sweep folder: combination, seed, selection and held-out metrics.

    ``runs``: the run folders of the current grid; finished runs of earlier grids in the same folder
    are then left out and named in one line. ``stacking`` (holdout target only) adds each run's
    stacked predictions as the combination ``<combination> + stacking`` (:func:`with_stacking`)."""
    rows = []
    found = sorted(Path(sweep_dir).glob("*/summary.json"))
    if runs is not None:
        stale = [s.parent.name for s in found if s.parent.name not in set(runs)]
        if stale:
            print(f"left out {len(stale)} run(s) of earlier grids: {', '.join(stale)}")
        order = {r: i for i, r in enumerate(runs)}  # the grid's order: its first combination is the baseline
        found = sorted((s for s in found if s.parent.name in order), key=lambda s: order[s.parent.name])
    for s in found:
        r = read_run(s.parent)
        if not r.get("combination"):
            continue
        summ = r["summary"]
        est = summ.get("estimates", {})
        rows.append({"run": r["run"], "combination": r["combination"], "seed": r.get("seed"),
                     "holdout_fingerprint": holdout_fingerprint(s.parent),
                     "holdout_auc": est.get("holdout", {}).get("auc"), "holdout_pf1": est.get("holdout", {}).get("pf1"),
                     "holdout_breasts": est.get("holdout", {}).get("breasts"),
                     "holdout_positives": est.get("holdout", {}).get("cancer_breasts"),
                     "oof_auc": est.get("oof", {}).get("auc"), "oof_pf1": est.get("oof", {}).get("pf1"),
                     "oof_pr_auc": est.get("oof", {}).get("pr_auc"),
                     "control": bool(r.get("control")), "params": json.dumps(r.get("params", {}), sort_keys=True),
                     "val_auc": summ.get("val_auc"), "val_pf1": summ.get("val_pf1"), "val_pr_auc": summ.get("val_pr_auc"),
                     "test_auc": summ.get("test_auc"), "test_pf1": summ.get("test_pf1"),
                     "test_pr_auc": summ.get("test_pr_auc"), "test_breasts": summ.get("test_breasts"),
                     "test_positives": summ.get("test_positives"), "best_epoch": summ.get("best_epoch"),
                     "minutes": round(summ.get("total_seconds", 0) / 60, 1)})
    if not rows:
        raise UserError(f"no finished sweep run under {sweep_dir}")
    table = pd.DataFrame(rows).assign(variant="network")
    return with_stacking(table, sweep_dir) if stacking and target == "holdout" else table


def combination_table(runs: pd.DataFrame, sweep_dir, data, n_boot: int = 1000, seed: int = 0,
                      target: str = "holdout") -> pd.DataFrame:
    """Per combination, each statistic's mean over seeds (``<target>_<stat>_seed_mean``) with a 95 %
    interval from a bootstrap over the target's patients (one resample serves every seed) and the seed
    spread; the out-of-fold and validation (selection) figures beside."""
    pre = prefix(target)
    if target == "holdout":
        check_same_holdout(runs)
    rows = []
    for combo, g in runs.groupby("combination", sort=False):
        breasts = aligned([target_breasts(data, Path(sweep_dir) / r, target, v) for r, v in zip(g.run, _variants(g))])
        y = breasts[0].cancer.to_numpy()
        idx = resamples(len(y), n_boot, seed, patient_groups(breasts[0]))
        row = {"combination": combo, "control": bool(g.control.any()), "seeds": len(g), "runs": ", ".join(g.run)}
        for name, (col, fn) in STATISTICS.items():
            per_seed = np.array([fn(y, b[col].to_numpy()) for b in breasts])
            key = f"{pre}_{name}_seed_mean"
            row[key] = float(np.mean(per_seed))
            row[f"{key}_ci_low"], row[f"{key}_ci_high"] = interval(fn, y, *[b[col] for b in breasts], indices=idx)
            row[f"{pre}_{name}_seed_sd"] = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else float("nan")
        for name in ("val_auc", "val_pf1", "val_pr_auc", "oof_auc", "oof_pf1", "oof_pr_auc"):
            vals = g[name].astype(float).to_numpy()
            key = f"{name}_seed_mean"
            row[key] = float(np.mean(vals))
            half = 1.96 * np.std(vals, ddof=1) / np.sqrt(len(vals)) if len(vals) > 1 else float("nan")
            row[f"{key}_ci_low"], row[f"{key}_ci_high"] = row[key] - half, row[key] + half
        row[f"{pre}_breasts"], row[f"{pre}_positives"] = len(y), int(np.sum(y))
        row["minutes_per_run"] = float(g.minutes.mean())
        rows.append(row)
    return pd.DataFrame(rows)


def paired_table(runs: pd.DataFrame, sweep_dir, data, baseline: str | None = None, metric: str = "auc",
                 n_boot: int = 2000, seed: int = 0, target: str = "holdout") -> pd.DataFrame:
    """Each combination against ``baseline``: the difference of ``<target>_<metric>_seed_mean`` (the
    combination table's column), with a paired bootstrap over the same patients (breasts matched on
    ``prediction_id``)."""
    col, fn = statistic(metric)
    pre = prefix(target)
    if target == "holdout":
        check_same_holdout(runs)
    combos = list(dict.fromkeys(runs.combination))
    baseline = baseline or combos[0]
    if baseline not in combos:
        raise UserError(f"baseline {baseline!r} is not a combination of this sweep: {combos}")

    def per_seed(combo, order=None):
        g = runs[runs.combination == combo]
        return aligned([target_breasts(data, Path(sweep_dir) / r, target, v) for r, v in zip(g.run, _variants(g))],
                       order)

    base = per_seed(baseline)
    y, order, groups = base[0].cancer.to_numpy(), base[0].index, patient_groups(base[0])
    rows = []
    for combo in combos:
        if combo == baseline:
            continue
        preds = [b[col].to_numpy() for b in per_seed(combo, order)]
        rows.append({"combination": combo, "baseline": baseline, "metric": f"{pre}_{metric}_seed_mean",
                     **paired_difference(fn, y, preds, [b[col].to_numpy() for b in base], n_boot, seed,
                                         groups=groups)})
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


def headline_columns(target: str = "holdout") -> list[str]:
    """The columns of a combination table a reader looks at first."""
    pre = prefix(target)
    return ["combination", "control", "seeds", f"{pre}_auc_seed_mean", f"{pre}_auc_seed_mean_ci_low",
            f"{pre}_auc_seed_mean_ci_high", f"{pre}_pf1_seed_mean", f"{pre}_pr_auc_seed_mean",
            f"{pre}_sens_at_spec_seed_mean", "oof_auc_seed_mean",
            "val_auc_seed_mean", "minutes_per_run"]

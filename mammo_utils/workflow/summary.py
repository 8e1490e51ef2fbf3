"""summary.json: what a run measured, each figure beside the threshold and the breasts it was measured on,
and only results built on the run's present inputs.

A partial rerun (``--only 03`` with another holdout, ``--from 04`` on some folds, notebook 05 after 06)
changes what earlier results were built on. Each result records its inputs (evaluation.json: the holdout
fingerprint and the folds' checkpoints; the submission: its checkpoints and threshold); here they are
compared with the run as it is now (:class:`~mammo_utils.learn.runs.Run`). A result that no longer
matches is left out of the summary and named under ``stale`` with what to rerun: an old figure is never
reported as the run's.
"""
from __future__ import annotations

import json
from pathlib import Path

from .. import paths
from ..learn.runs import Run


def build_summary(data, run, seconds: dict) -> dict:
    """The summary of ``run`` as it is now (see the module docstring)."""
    from ..provenance import provenance

    current = Run(run)
    summary = {"data_dir": str(data), "run_dir": str(run), "seconds": seconds,
               "total_seconds": round(sum(seconds.values()), 1), "provenance": provenance(),
               "inputs": current.inputs()}
    stale = training_stale(current)
    evaluation = current.evaluation()
    if evaluation:
        why = current.stale(evaluation.get("inputs"), paths.evaluation_json(run).name)
        stale += why
        if not why and not stale:
            summary.update(evaluation_figures(evaluation))
    record_path = paths.submission_record(paths.submission_csv(run))
    if paths.submission_csv(run).exists():
        record = json.loads(record_path.read_text()) if record_path.exists() else None
        why = submission_stale(current, record)
        stale += why
        if not why:
            summary.update(submission_figures(Path(data), Path(run), record))
    if stale:
        summary["stale"] = stale
    return summary


def stale_results(run) -> list[str]:
    """Why results in the run folder (evaluation.json, the submission) no longer describe it ([]: current)."""
    current = Run(run)
    out = training_stale(current)
    if paths.evaluation_json(run).exists():
        out += current.stale(current.evaluation().get("inputs"), paths.evaluation_json(run).name)
    if paths.submission_csv(run).exists():
        record = paths.submission_record(paths.submission_csv(run))
        out += submission_stale(current, json.loads(record.read_text()) if record.exists() else None)
    return out


def training_stale(current: Run) -> list[str]:
    """Folds trained beside another holdout than the run's present one (notebook 03 ran again since)."""
    now = current.holdout_fingerprint()
    odd = [f.k for f in current.folds() if f.config.get("holdout_fingerprint") != now]
    if not odd or now is None:
        return []
    return [f"fold(s) {odd} were trained beside another holdout than the run's present one ({now}): rerun "
            f"from notebook 04 before any figure of this run is quoted"]


def evaluation_figures(ev: dict) -> dict:
    """Notebook 05's figures: the selection figures (one fold's validation breasts, ``val_*``, beside that
    fold's own threshold ``val_threshold``), the decision (chosen out of fold, applied by the ensemble)
    and the estimates, each of which carries its own threshold and breasts."""
    sel = ev.get("selection", {})
    out = {f"val_{k}": sel.get(k) for k in ("auc", "pf1", "pr_auc", "threshold", "sensitivity", "specificity",
                                            "breasts", "positives", "fold", "measured_on")}
    out.update(best_epoch=sel.get("best_epoch"), estimates=ev.get("estimates", {}),
               decision={k: ev.get(k) for k in ("threshold", "aggregate", "threshold_method", "chosen_on")})
    if len({r["source"] for r in ev.get("by_source", {}).get("holdout", [])}) > 1:
        out["by_source"] = {r["source"]: {k: r[k] for k in ("breasts", "positives", "auc", "pf1")}
                            for r in ev["by_source"]["holdout"]}
    return out


def submission_stale(current: Run, record: dict | None) -> list[str]:
    """Why the run's submission no longer is what its present checkpoints and decision would make."""
    name = paths.SUBMISSION
    if record is None:
        return [f"{name} records no checkpoints (written by an earlier version): rerun notebook 06"]
    made_with = sorted(record.get("checkpoints", {}).values())
    if made_with != sorted(current.fingerprints().values()):
        return [f"{name} was made by other checkpoints than the run's present folds: rerun notebook 06"]
    decision = current.decision()
    if decision is not None and abs(float(decision["threshold"]) - float(record.get("threshold", -1))) > 1e-12:
        return [f"{name} applied threshold {record.get('threshold')}, the run's decision is now "
                f"{decision['threshold']}: rerun notebook 06"]
    return []


def submission_figures(data: Path, run: Path, record: dict) -> dict:
    """The submission's size, and with the generator's labels its scores on the synthetic test set, at the
    threshold the submission applied."""
    from ..tables import read_csv

    sub = read_csv(paths.submission_csv(run))
    out = {"submission": str(paths.submission_csv(run)), "submission_rows": len(sub),
           "submission_positive": int((sub.cancer >= 0.5).sum()), "submission_threshold": record.get("threshold")}
    out.update(score_synthetic_test(data, run, record))
    return out


def score_synthetic_test(data: Path, run: Path, record: dict) -> dict:
    """With the generator's side file, the synthetic test set has labels: score the submission on it.
    These breasts took no part in training, epoch selection or the threshold: an untouched estimate."""
    from .. import metrics
    from ..judge.compare import test_breasts
    from ..judge.estimates import clean, estimate

    if not paths.synthetic_truth(data).exists() or not paths.image_predictions_csv(paths.submission_csv(run)).exists():
        return {}
    b = test_breasts(data, run)
    threshold = float(record["threshold"])
    sens, spec = metrics.sensitivity_specificity(b.cancer, b.pred, threshold)
    return {"test_pf1": metrics.pfbeta(b.cancer, b.pred >= threshold), "test_threshold": threshold,
            "test_sensitivity": sens, "test_specificity": spec, "test_auc": metrics.auc(b.cancer, b.pred),
            "test_pr_auc": metrics.pr_auc(b.cancer, b.pred), "test_breasts": int(len(b)),
            "test_positives": int(b.cancer.sum()), "test_measured_on": paths.image_predictions_csv(paths.SUBMISSION).name,
            "synthetic_test": clean({**estimate(b, threshold), "measured_on": paths.image_predictions_csv(
                paths.SUBMISSION).name, "note": "the generator's labelled test set, predicted by the submission: "
                                                "an untouched estimate"})}


def write_summary(data, run, seconds: dict) -> dict:
    """Build the summary and write ``<run>/summary.json``; the synthetic test estimate joins the others."""
    summary = build_summary(data, run, seconds)
    test = summary.pop("synthetic_test", None)
    if test is not None and "estimates" in summary:
        summary["estimates"]["synthetic_test"] = test
    paths.summary_json(run).write_text(json.dumps(summary, indent=2, default=str))
    return summary

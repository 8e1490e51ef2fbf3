"""A run judged as a journal and a screening programme ask: from its prediction files alone.

Reads ``<run>/oof_predictions.csv`` and ``<run>/holdout_predictions.csv`` (image probabilities), the
run's decision rule and aggregation, and its holdout description. Every choice (operating points,
recalibration) is made on the out-of-fold breasts and applied unchanged to the holdout; every interval
resamples patients. :func:`judge_run` returns one dict that notebook 05 shows and
:mod:`mammo_utils.workflow.model_card` writes down.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .. import metrics, paths, tables
from ..errors import UserError
from ..learn.sampling import data_breast_prevalence
from . import calibration, screening, subgroups
from .bootstrap import interval, patient_groups
from .estimates import estimate, with_unreadable

ESTIMATES = ("out of fold", "holdout")


def data_dir(run) -> Path | None:
    """The data folder the run was made from: its preprocessed folder's ``preprocess.json`` (through a
    fold's config.json), else ``summary.json``; None when neither says."""
    run = Path(run)
    for cfg in sorted(paths.train_root(run).glob(f"*/{paths.CONFIG}")):
        pre = json.loads(cfg.read_text()).get("preprocessed")
        if pre and (Path(pre) / paths.PREPROCESS_CONFIG).exists():
            data = json.loads((Path(pre) / paths.PREPROCESS_CONFIG).read_text()).get("data")
            if data:
                return Path(data)
    if paths.summary_json(run).exists():
        data = json.loads(paths.summary_json(run).read_text()).get("data_dir")
        return Path(data) if data else None
    return None


def decision_rule(run) -> dict:
    """The run's aggregation and decision threshold with how it was chosen: evaluation.json (notebook
    05), else the threshold.json its current folds share (:meth:`Run.decision`, never a stale or an
    older recipe's); ``threshold`` None when the run has neither."""
    from ..learn.runs import Run
    from .compare import run_aggregation

    run = Path(run)
    ev = Run(run).evaluation()
    if ev.get("threshold") is not None:
        return {"aggregate": ev.get("aggregate") or run_aggregation(run), "threshold": float(ev["threshold"]),
                "method": ev.get("threshold_method", "best")}
    saved = Run(run).decision()
    if saved:
        return {"aggregate": saved.get("aggregate", "mean"), "threshold": float(saved["threshold"]),
                "method": saved.get("method", "best")}
    return {"aggregate": run_aggregation(run), "threshold": None, "method": "best"}


def read_images(path: Path, required: bool) -> pd.DataFrame:
    """Image predictions (an image that failed has no probability: :func:`breasts_of` decides)."""
    if not path.exists():
        if required:
            raise UserError(f"{path} not found: run notebook 05 (it pools the folds' out-of-fold predictions)")
        return pd.DataFrame(columns=["patient_id", "laterality", "image_id", "cancer", "pred"])
    images = tables.read_csv(path)
    missing = [c for c in ("patient_id", "cancer", "pred") if c not in images]
    if missing or ("laterality" not in images and "prediction_id" not in images):
        raise UserError(f"{path}: missing column(s) {missing or ['laterality']}: not a prediction file of a run")
    return images


def breasts_of(images: pd.DataFrame, aggregate: str, extra: pd.DataFrame | None,
               prior: float | None = None) -> pd.DataFrame:
    """Per-breast probabilities aggregated as the run trained (an image without one left out of its
    breast), with each breast's subgroup columns. ``prior``: the holdout's rule
    (:func:`.estimates.with_unreadable`): a breast with no readable image is kept at that prevalence, as
    the run's own holdout estimate keeps it; None: it is left out."""
    if images.empty:
        return pd.DataFrame(columns=["prediction_id", "patient_id", "cancer", "pred"])
    breasts = (metrics.aggregate_breasts(images.dropna(subset=["pred"]), how=aggregate) if prior is None
               else with_unreadable(images, aggregate, prior))
    return subgroups.with_metadata(breasts, images, extra)


def describe(images: pd.DataFrame, breasts: pd.DataFrame) -> dict:
    """Counts and prevalence of one set of predictions, and its breasts per source."""
    if breasts.empty:
        return {"images": 0, "breasts": 0, "patients": 0}
    exams = screening.examinations(breasts)
    return {"images": int(images.pred.notna().sum()), "breasts": len(breasts), "patients": len(exams),
            "cancer_breasts": int(breasts.cancer.sum()), "cancer_examinations": int(exams.cancer.sum()),
            "breast_prevalence": float(breasts.cancer.mean()), "examination_prevalence": float(exams.cancer.mean()),
            "sources": {str(k): int(v) for k, v in tables.sources(breasts).value_counts().sort_index().items()}}


def discrimination(breasts: pd.DataFrame, threshold: float, n_boot: int, seed: int) -> dict:
    """AUC, PR-AUC and pF1 per breast (:func:`.estimates.estimate`), and AUC per examination, each with
    an interval over patients."""
    exams = screening.examinations(breasts)
    auc = metrics.auc(exams.cancer, exams.pred)
    return {"breast": estimate(breasts, threshold, n_boot, seed),
            "examination": {"auc": auc, "auc_ci": list(interval(metrics.auc, exams.cancer, exams.pred, n=n_boot,
                                                                 seed=seed, groups=patient_groups(exams))),
                            "examinations": len(exams), "cancer_examinations": int(exams.cancer.sum())}}


def judge_run(run, screening_prevalence: float = screening.SCREENING_PREVALENCE, operating_points=None,
              recalibration: str = "none", subgroup_point: str = "decision", n_boot: int = 500, seed: int = 0,
              data=None, threshold: float | None = None, aggregate: str | None = None, bins: int = 10) -> dict:
    """Everything the model card reports, from the run's prediction files (see the module docstring).

    ``threshold``/``aggregate`` None: the run's own decision rule (:func:`decision_rule`); a run without
    one gets the pF1-best threshold of its OOF breasts. ``operating_points``: the user's extra points
    (:func:`.screening.choose_points`). ``data``: the data folder (for density and the synthetic flag);
    None: the one the run was made from."""
    run = Path(run)
    if not 0 < screening_prevalence < 1:
        raise UserError(f"screening_prevalence must be in (0, 1) (5.1 per 1,000 is 0.0051), got {screening_prevalence}")
    if recalibration not in calibration.RECALIBRATIONS:
        raise UserError(f"recalibration must be one of {calibration.RECALIBRATIONS}, got {recalibration!r}")
    rule = decision_rule(run)
    aggregate = aggregate or rule["aggregate"]
    data = Path(data) if data else data_dir(run)
    extra = tables.read_csv(paths.split_csv(data, "train")) if data and paths.split_csv(data, "train").exists() else None
    images = {"out of fold": read_images(paths.oof_csv(run), True),
              "holdout": read_images(paths.holdout_predictions_csv(run), False)}
    oof = breasts_of(images["out of fold"], aggregate, extra)
    prior = data_breast_prevalence(paths.folds_csv(run)) if paths.folds_csv(run).exists() else float(oof.cancer.mean())
    breasts = {"out of fold": oof, "holdout": breasts_of(images["holdout"], aggregate, extra, prior)}
    if threshold is None and rule["threshold"] is None:
        threshold, how = metrics.best_threshold(oof.cancer, oof.pred)[0], "pF1-best on the OOF breasts (no saved rule)"
    elif threshold is None:
        threshold, how = rule["threshold"], f"the run's decision threshold ({rule['method']}, chosen on the OOF breasts)"
    else:
        how = "given"
    pf1 = metrics.best_threshold(oof.cancer, oof.pred)[0]
    if "pf1" in (operating_points or {}):
        raise UserError("operating point 'pf1': the run's own pF1-best point has that name: call yours otherwise")
    if abs(pf1 - threshold) > 1e-12:  # a decision by quantile (or given): the pF1 point is shown too
        operating_points = {"pf1": pf1, **(operating_points or {})}
    points = screening.choose_points(oof, threshold, how, operating_points)
    points.loc[points.point == "pf1", "how"] = "pF1-best threshold on the OOF breasts"
    if subgroup_point not in set(points.point):
        raise UserError(f"subgroup_point {subgroup_point!r} is not an operating point: {list(points.point)}")
    judged = "holdout" if len(breasts["holdout"]) else "out of fold"
    sub_threshold = float(points.set_index("point").threshold[subgroup_point])
    table = screening.evaluate_points(points, breasts, screening_prevalence, n_boot, seed)
    sub = subgroups.subgroup_table(breasts[judged], sub_threshold, n_boot=n_boot, seed=seed)
    holdout_info = json.loads(paths.holdout_json(run).read_text()) if paths.holdout_json(run).exists() else {}
    return {"run": str(run), "data_dir": str(data) if data else None,
            "synthetic": bool(data and paths.synthetic_truth(data).exists()), "data_found": bool(data and data.is_dir()),
            "settings": {"aggregate": aggregate, "decision_threshold": float(threshold), "decision_how": how,
                         "screening_prevalence": float(screening_prevalence), "bootstrap": n_boot, "seed": seed,
                         "recalibration": recalibration, "subgroup_point": subgroup_point,
                         "subgroup_threshold": sub_threshold, "judged_on": judged},
            "data": {k: describe(images[k], breasts[k]) for k in ESTIMATES}, "holdout": holdout_info,
            "discrimination": {k: discrimination(b, threshold, n_boot, seed) for k, b in breasts.items() if len(b)},
            "points": points, "operating": table, "bcsc": screening.against_bcsc(table),
            "calibration": calibration.judge(oof, breasts["holdout"], recalibration, bins, n_boot, seed),
            "subgroups": sub, "subgroups_absent": subgroups.absent(breasts[judged]), "breasts": breasts}


def record(run, judged: dict) -> Path:
    """Add the operating points (every point, set and level, with counts, figures and intervals) and how
    they were chosen to ``<run>/evaluation.json``, beside the estimates notebook 05 wrote there."""
    from .estimates import clean

    path = paths.evaluation_json(run)
    evaluation = json.loads(path.read_text()) if path.exists() else {}
    evaluation["operating_points"] = clean({"screening_prevalence": judged["settings"]["screening_prevalence"],
                                            "adjustment": screening.ADJUSTMENT_NOTE,
                                            "points": judged["points"].to_dict("records"),
                                            "figures": judged["operating"].to_dict("records")})
    path.write_text(json.dumps(evaluation, indent=2))
    return path

"""Operating points as a screening programme reads them: per examination and per breast.

A programme judges a reader by sensitivity, specificity, the recall (abnormal interpretation) rate,
the cancer detection rate (CDR, per 1,000 screens) and PPV1 (cancers among recalls), per
**examination**: a patient's screening exam is recalled when either breast is called positive, and
it is a cancer exam when either breast has cancer. So an examination's score is the larger of its
breasts' scores: it is recalled at threshold ``t`` exactly when one breast reaches ``t``.

Anchors: the BCSC benchmarks for digital screening mammography (Lehman et al., Radiology 2017;
283:49-58; 1.68 M examinations read by 359 radiologists): sensitivity 86.9 %, specificity 88.9 %,
recall rate 11.6 %, CDR 5.1 per 1,000, PPV1 4.4 %; acceptable performance: sensitivity >= 80 % with
specificity >= 85 %.

**Prevalence.** CDR, recall rate and PPV1 depend on how many cancers the population holds; sensitivity
and specificity do not. A data set enriched with cancers (RSNA: about 2 % of breasts) is not a
screening population, so each is reported twice: at the data's prevalence (plain counts), and at a
screening prevalence ``pi`` (default 5.1 per 1,000, the BCSC CDR) by reweighting cancer and cancer-free
examinations to ``pi`` while keeping the measured sensitivity and specificity::

    CDR = sens * pi        recall = sens * pi + (1 - spec) * (1 - pi)        PPV1 = sens * pi / recall

At the data's own prevalence these formulas give back the plain counts exactly.

Every interval is a percentile bootstrap over **patients** (:mod:`.bootstrap`): all counts of a resample
come from one matrix product, so the adjusted figures of a resample use that resample's sensitivity
and specificity.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import metrics
from ..errors import UserError
from .bootstrap import patient_groups, percentile_interval, resample_weights

SCREENING_PREVALENCE = 0.0051  # 5.1 per 1,000: the BCSC cancer detection rate
BCSC = {"sensitivity": 0.869, "specificity": 0.889, "recall_rate": 0.116, "cdr_per_1000": 5.1, "ppv1": 0.044}
BCSC_SOURCE = "BCSC digital screening, Lehman et al., Radiology 2017 (1.68 M examinations)"
ACCEPTABLE = {"sensitivity": 0.80, "specificity": 0.85}
FIGURES = ("sensitivity", "specificity", "recall_rate", "cdr_per_1000", "ppv1")
ADJUSTED = ("recall_rate", "cdr_per_1000", "ppv1")  # the figures that move with prevalence
LEVELS = ("examination", "breast")
ADJUSTMENT_NOTE = ("reweighted to the screening prevalence pi: CDR = sens * pi, recall = sens * pi + "
                   "(1 - spec) * (1 - pi), PPV1 = sens * pi / recall (sensitivity and specificity as measured)")


def examinations(breasts: pd.DataFrame, pred: str = "pred", label: str = "cancer") -> pd.DataFrame:
    """One row per patient's examination: ``cancer`` when either breast has cancer, ``pred`` the larger
    breast score (the exam is recalled at ``t`` when either breast reaches ``t``), ``breasts`` counted."""
    groups = patient_groups(breasts)
    exams = pd.DataFrame({"patient_id": groups, label: breasts[label].to_numpy(), pred: breasts[pred].to_numpy()})
    return exams.groupby("patient_id", sort=True).agg(**{label: (label, "max"), pred: (pred, "max"),
                                                        "breasts": (pred, "size")}).reset_index()


def rates(tp, fn, fp, tn, prevalence: float | None = None) -> dict:
    """The five figures from confusion counts (numbers or arrays of resamples). ``prevalence`` None:
    the data's own (plain counts); a number: reweighted to it (see the module docstring)."""
    tp, fn, fp, tn = (np.asarray(v, dtype=np.float64) for v in (tp, fn, fp, tn))
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = np.where(tp + fn > 0, tp / np.where(tp + fn > 0, tp + fn, 1), np.nan)
        spec = np.where(fp + tn > 0, tn / np.where(fp + tn > 0, fp + tn, 1), np.nan)
        if prevalence is None:
            n = tp + fn + fp + tn
            recall, cdr = (tp + fp) / n, tp / n
            ppv = np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1), np.nan)
        else:
            cdr = sens * prevalence
            recall = cdr + (1 - spec) * (1 - prevalence)
            ppv = np.where(recall > 0, cdr / np.where(recall > 0, recall, 1), np.nan)
    out = {"sensitivity": sens, "specificity": spec, "recall_rate": recall, "cdr_per_1000": 1000 * cdr, "ppv1": ppv}
    return {k: (float(v) if np.ndim(v) == 0 else v) for k, v in out.items()}


def operating_point(labels, preds, threshold: float, groups=None, prevalence: float = SCREENING_PREVALENCE,
                    n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Counts and the five figures at ``threshold`` (positive when ``pred >= threshold``), each with a
    ``1 - alpha`` interval over ``groups`` (patients; None: rows), at the data's prevalence and, as
    ``screening_<figure>``, reweighted to ``prevalence``."""
    y = np.asarray(labels).astype(bool)
    called = np.asarray(preds, dtype=np.float64) >= threshold
    ind = {"tp": y & called, "fn": y & ~called, "fp": ~y & called, "tn": ~y & ~called}
    count = {k: int(v.sum()) for k, v in ind.items()}
    out = {"threshold": float(threshold), "n": len(y), "cancers": int(y.sum()), "recalled": int(called.sum()),
           "true_positives": count["tp"], "false_positives": count["fp"], "false_negatives": count["fn"],
           "true_negatives": count["tn"], "data_prevalence": float(y.mean()) if len(y) else float("nan"),
           "screening_prevalence": float(prevalence)}
    weights = resample_weights(len(y), n_boot, seed, groups)
    boot = {k: weights @ v.astype(np.float64) for k, v in ind.items()}
    for key, pi in (("", None), ("screening_", prevalence)):
        point, resampled = rates(**count, prevalence=pi), rates(**boot, prevalence=pi)
        for name in FIGURES if not key else ADJUSTED:
            out[f"{key}{name}"] = point[name]
            out[f"{key}{name}_ci"] = list(percentile_interval(resampled[name], alpha))
    return out


def _check_target(target, what: str) -> float:
    """A specificity or sensitivity to reach, as a share: 88.9 % is 0.889 (an 88.9 would never be reached)."""
    if not 0 < float(target) <= 1:
        raise UserError(f"a {what} to reach must be a share in (0, 1] (88.9 % is 0.889), got {target!r}")
    return float(target)


def threshold_at_specificity(labels, preds, target: float) -> float:
    """The lowest threshold whose specificity is at least ``target`` (the most sensitive such point)."""
    target = _check_target(target, "specificity")
    y, p = np.asarray(labels).astype(bool), np.asarray(preds, dtype=np.float64)
    if not (~y).any():
        raise UserError("a threshold at a specificity needs cancer-free examinations; these have none")
    candidates = np.append(np.unique(p), np.nextafter(p.max(), np.inf))
    spec = np.searchsorted(np.sort(p[~y]), candidates, side="left") / (~y).sum()
    return float(candidates[np.argmax(spec >= target - 1e-12)])


def threshold_at_sensitivity(labels, preds, target: float) -> float:
    """The highest threshold whose sensitivity is at least ``target`` (the most specific such point)."""
    target = _check_target(target, "sensitivity")
    y, p = np.asarray(labels).astype(bool), np.asarray(preds, dtype=np.float64)
    if not y.any():
        raise UserError("a threshold at a sensitivity needs cancer examinations; these have none")
    candidates = np.unique(p)
    sens = 1 - np.searchsorted(np.sort(p[y]), candidates, side="left") / y.sum()
    return float(candidates[np.nonzero(sens >= target - 1e-12)[0][-1]])


def sensitivity_at_specificity(labels, preds, target: float = BCSC["specificity"]) -> float:
    """Sensitivity at the lowest threshold whose specificity is at least ``target`` on these rows (a
    point of their ROC curve; NaN with one class). Compares recipes at a radiologist's specificity."""
    y = np.asarray(labels).astype(bool)
    if y.all() or not y.any():
        return float("nan")
    t = threshold_at_specificity(y, preds, target)
    return float((np.asarray(preds)[y] >= t).mean())


def choose_points(oof_breasts: pd.DataFrame, decision: float, decision_how: str = "the run's decision threshold",
                  user=None) -> pd.DataFrame:
    """The operating points, each chosen on the out-of-fold breasts (or examinations) and named:

    * ``decision``: the run's own threshold (pF1 or quantile, chosen on the OOF breasts);
    * ``bcsc_specificity`` / ``bcsc_sensitivity``: the lowest (highest) threshold whose *examination*
      specificity (sensitivity) on the OOF predictions reaches the BCSC radiologists' 88.9 % (86.9 %);
    * ``user``: ``{name: threshold}`` or ``{name: {"specificity": s}}`` / ``{name: {"sensitivity": s}}``.
    """
    exams = examinations(oof_breasts)
    y, p = exams.cancer.to_numpy(), exams.pred.to_numpy()
    rows = [{"point": "decision", "threshold": float(decision), "how": decision_how},
            {"point": "bcsc_specificity", "threshold": threshold_at_specificity(y, p, BCSC["specificity"]),
             "how": "lowest threshold with OOF examination specificity >= 88.9 % (BCSC)"},
            {"point": "bcsc_sensitivity", "threshold": threshold_at_sensitivity(y, p, BCSC["sensitivity"]),
             "how": "highest threshold with OOF examination sensitivity >= 86.9 % (BCSC)"}]
    for name, spec in (user or {}).items():
        if str(name) in {r["point"] for r in rows}:
            raise UserError(f"operating point {name!r}: a point of that name is already there "
                            f"({', '.join(r['point'] for r in rows)}): call yours otherwise")
        if isinstance(spec, dict) and set(spec) == {"specificity"}:
            t, how = threshold_at_specificity(y, p, float(spec["specificity"])), f"OOF examination specificity >= {spec['specificity']}"
        elif isinstance(spec, dict) and set(spec) == {"sensitivity"}:
            t, how = threshold_at_sensitivity(y, p, float(spec["sensitivity"])), f"OOF examination sensitivity >= {spec['sensitivity']}"
        elif isinstance(spec, (int, float)) and not isinstance(spec, bool):
            t, how = float(spec), "named by the user"
        else:
            raise UserError(f"operating point {name!r}: give a threshold or {{'specificity': s}} / {{'sensitivity': s}}, "
                            f"got {spec!r}")
        rows.append({"point": str(name), "threshold": t, "how": how})
    return pd.DataFrame(rows)


def evaluate_points(points: pd.DataFrame, estimates: dict, prevalence: float = SCREENING_PREVALENCE,
                    n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Every point (:func:`choose_points`) applied unchanged to every set of breasts in ``estimates``
    (``{"out of fold": breasts, "holdout": breasts}``), per examination and per breast: one row each,
    intervals over patients."""
    rows = []
    for estimate, breasts in estimates.items():
        if not len(breasts):
            continue
        units = {"examination": examinations(breasts), "breast": breasts}
        for level, table in units.items():
            groups = patient_groups(table)
            for pt in points.itertuples():
                figures = operating_point(table.cancer, table.pred, pt.threshold, groups, prevalence, n_boot, seed)
                rows.append({"point": pt.point, "how": pt.how, "estimate": estimate, "level": level, **figures})
    return pd.DataFrame(rows)


def against_bcsc(table: pd.DataFrame) -> pd.DataFrame:
    """Examination-level figures beside the BCSC radiologists' (CDR, recall and PPV1 at the screening
    prevalence, as BCSC measured them), and whether the point is in the acceptable range."""
    exams = table[table.level == "examination"]
    rows = []
    for r in exams.itertuples():
        row = {"point": r.point, "estimate": r.estimate, "threshold": r.threshold}
        for name in FIGURES:
            key = f"screening_{name}" if name in ADJUSTED else name
            row[name], row[f"bcsc_{name}"] = getattr(r, key), BCSC[name]
        row["acceptable"] = bool(r.sensitivity >= ACCEPTABLE["sensitivity"] and r.specificity >= ACCEPTABLE["specificity"])
        rows.append(row)
    return pd.DataFrame(rows)


def exam_auc(breasts: pd.DataFrame) -> float:
    """AUC of examinations scored by their larger breast score."""
    exams = examinations(breasts)
    return metrics.auc(exams.cancer, exams.pred)

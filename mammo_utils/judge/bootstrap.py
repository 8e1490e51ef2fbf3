"""Percentile bootstrap: intervals of one statistic, and paired differences between runs.

One home for both, so an interval and a difference always resample the same way: ``n`` resamples from
``seed``, resamples where the statistic is undefined (AUC with one class) left out and counted.

**Patients, not breasts.** A patient's two breasts (and four images) are correlated: one woman's dense
tissue or one machine's noise moves both of her breasts' scores. Resampling breasts as if independent
then makes intervals too narrow. Given ``groups`` (a patient id per row), every resample draws
*patients* with replacement and takes all of their rows: the cluster bootstrap (Davison & Hinkley,
*Bootstrap Methods and their Application*, 1997, section 3.8; Field & Welsh, JASA 2007). Without
``groups`` rows are drawn one by one, as before. ``benchmarks/bootstrap_coverage.py`` measures both.
"""
from __future__ import annotations

import numpy as np


def resamples(n_items: int, n: int = 1000, seed: int = 0, groups=None):
    """``n`` resamples of row indices. Without ``groups``: an ``n`` x ``n_items`` array, rows drawn with
    replacement. With ``groups`` (one patient id per row): a list of ``n`` index arrays, each holding
    every row of the patients drawn (with replacement), so its length varies with their breasts."""
    if groups is None:
        return np.random.default_rng(seed).integers(0, n_items, size=(n, n_items))
    codes, draws = _cluster_draws(groups, n, seed)
    if len(codes) != n_items:
        raise ValueError(f"groups has {len(codes)} entries for {n_items} rows")
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes, minlength=draws.shape[1])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    out = []
    for d in draws:
        counts = sizes[d]
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        out.append(order[np.repeat(starts[d], counts) + offsets])
    return out


def patient_groups(breasts) -> np.ndarray:
    """The patient of each row of a breast table: its ``patient_id`` column, else the patient part of
    ``prediction_id`` (a column or the index), the competition's ``f"{patient_id}_{laterality}"``. A
    table with neither (a bare range index) gives each row its own patient: the breast bootstrap."""
    if "patient_id" in breasts:
        return breasts["patient_id"].astype(str).to_numpy()
    ids = breasts["prediction_id"] if "prediction_id" in breasts else breasts.index.to_series()
    return ids.astype(str).str.rsplit("_", n=1).str[0].to_numpy()


def _cluster_draws(groups, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(cluster code of each row, ``n`` x ``n_clusters`` clusters drawn with replacement)."""
    import pandas as pd

    codes, uniques = pd.factorize(np.asarray(groups), sort=True)
    if (codes < 0).any():
        raise ValueError("groups has missing values: every row needs its patient")
    return codes, np.random.default_rng(seed).integers(0, len(uniques), size=(n, len(uniques)))


def resample_weights(n_items: int, n: int = 1000, seed: int = 0, groups=None) -> np.ndarray:
    """``n`` x ``n_items``: how often each row is in each resample, the same resamples as
    :func:`resamples` with the same ``seed`` and ``groups`` (a patient's rows share her count). A count
    (true positives, recalls, ...) of a resample is then one matrix product: ``weights @ indicator``,
    so ratio statistics (sensitivity, specificity, recall rate, CDR, PPV) need no loop."""
    if groups is None:
        draws = resamples(n_items, n, seed)
        return np.stack([np.bincount(d, minlength=n_items) for d in draws]) if n else np.zeros((0, n_items))
    codes, draws = _cluster_draws(groups, n, seed)
    if len(codes) != n_items:
        raise ValueError(f"groups has {len(codes)} entries for {n_items} rows")
    k = draws.shape[1]
    counts = np.zeros((n, k), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(n), k), draws.ravel()), 1)
    return counts[:, codes]


def ratio_interval(numerator, denominator, weights: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of ``sum(numerator) / sum(denominator)`` over the resamples in ``weights``
    (from :func:`resample_weights`); resamples with an empty denominator are left out."""
    num = weights @ np.asarray(numerator, dtype=np.float64)
    den = weights @ np.asarray(denominator, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _percentiles(np.where(den > 0, num / np.where(den > 0, den, 1), np.nan), alpha)


def percentile_interval(values, alpha: float = 0.05) -> tuple[float, float]:
    """(low, high) percentiles of the finite resampled ``values`` (NaN, NaN when none is finite)."""
    return _percentiles(values, alpha)


def _percentiles(values, alpha: float) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def _class_weights_at(labels, scores, weights):
    """(distinct scores' index of each row, positives' and negatives' resampled weight at each distinct
    score: two ``n_resamples`` x ``n_distinct`` arrays)."""
    from scipy import sparse

    y = np.asarray(labels).astype(bool)
    values, inverse = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    out = []
    for rows in (np.flatnonzero(y), np.flatnonzero(~y)):
        onehot = sparse.csr_matrix((np.ones(len(rows)), (np.arange(len(rows)), inverse[rows])),
                                   shape=(len(rows), len(values)))
        out.append(np.asarray((onehot.T @ weights[:, rows].T).T))
    return inverse, out[0], out[1]


def weighted_average_precision(labels, scores, weights: np.ndarray) -> np.ndarray:
    """Average precision of every resample in ``weights``, as :func:`mammo_utils.metrics.pr_auc` gives
    it on the resampled rows (sklearn's step sum over distinct scores, no interpolation)."""
    _, pos, neg = _class_weights_at(labels, scores, weights)
    tp, fp = np.cumsum(pos[:, ::-1], axis=1), np.cumsum(neg[:, ::-1], axis=1)  # called at score >= each value
    total = tp[:, -1:] if tp.shape[1] else np.zeros((len(tp), 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1), 0.0)
        ap = (pos[:, ::-1] * precision).sum(axis=1) / total[:, 0]
    return np.where((total[:, 0] > 0) & (neg.sum(axis=1) > 0), ap, np.nan)


def weighted_auc(labels, scores, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of every resample in ``weights`` (from :func:`resample_weights`) at once: the
    Mann-Whitney statistic with each row counted as often as it was drawn (ties count one half), the
    same number :func:`mammo_utils.metrics.auc` gives on the resampled rows. NaN where a resample
    lacks a class."""
    _, pos, at = _class_weights_at(labels, scores, weights)  # at: negatives' weight at each distinct score
    below = np.cumsum(at, axis=1) - at
    wins = (pos * (below + 0.5 * at)).sum(axis=1)
    pairs = pos.sum(axis=1) * at.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / np.where(pairs > 0, pairs, 1), np.nan)


def interval(statistic, labels, *predictions, n: int = 1000, seed: int = 0, alpha: float = 0.05,
             indices=None, groups=None) -> tuple[float, float]:
    """(low, high) percentile interval of ``mean_k statistic(labels, predictions[k])``.

    Several prediction arrays (the seeds of one recipe) share each resample, and the statistic is
    averaged over them: the interval is the one of the mean over seeds that a table reports.
    ``groups``: a patient id per row, to resample patients (see the module docstring)."""
    y = np.asarray(labels)
    preds = [np.asarray(p, dtype=np.float64) for p in predictions]
    idx = resamples(len(y), n, seed, groups) if indices is None else indices
    return _percentiles(np.mean([per_resample(statistic, y, p, idx) for p in preds], axis=0), alpha)


def per_resample(statistic, labels, preds, indices, chunk: int = 200) -> np.ndarray:
    """``statistic(labels[i], preds[i])`` for every resample ``i`` of ``indices``. AUC and average
    precision (:func:`mammo_utils.metrics.auc`, ``pr_auc``) are computed for a chunk of resamples at
    once (:func:`weighted_auc`, :func:`weighted_average_precision`): the same numbers, a hundred
    times faster than one sklearn call each."""
    from .. import metrics

    y, p = np.asarray(labels), np.asarray(preds)
    fast = {metrics.auc: weighted_auc, metrics.pr_auc: weighted_average_precision}.get(statistic)
    if fast is None or not len(indices):
        return np.array([statistic(y[i], p[i]) for i in indices], dtype=np.float64)
    parts = [fast(y, p, np.stack([np.bincount(i, minlength=len(y)) for i in indices[k:k + chunk]]))
             for k in range(0, len(indices), chunk)]
    return np.concatenate(parts)


def paired_difference(statistic, labels, preds_a, preds_b, n: int = 2000, seed: int = 0, alpha: float = 0.05,
                      indices=None, groups=None) -> dict:
    """``mean_s statistic(a_s) - mean_s statistic(b_s)`` on the same breasts, with a percentile interval.

    ``preds_a`` and ``preds_b`` are lists of arrays (one per seed; a single array is one seed). Each
    resample (of patients, given ``groups``) is applied to every run of both sides: that is what makes
    it paired, and the difference estimates exactly the difference of the seed means a comparison
    table shows."""
    y = np.asarray(labels)
    a = [np.asarray(p, dtype=np.float64) for p in (preds_a if isinstance(preds_a, list) else [preds_a])]
    b = [np.asarray(p, dtype=np.float64) for p in (preds_b if isinstance(preds_b, list) else [preds_b])]
    if any(len(p) != len(y) for p in a + b):
        from ..errors import UserError

        raise UserError(f"a paired difference needs predictions of the same {len(y)} breasts on both sides")

    def diff(idx):
        return (np.mean([per_resample(statistic, y, p, idx) for p in a], axis=0)
                - np.mean([per_resample(statistic, y, p, idx) for p in b], axis=0))

    idx = resamples(len(y), n, seed, groups) if indices is None else indices
    diffs = diff(idx)
    finite = diffs[np.isfinite(diffs)]
    lo, hi = _percentiles(finite, alpha)
    return {"diff": float(diff([np.arange(len(y))])[0]), "ci_low": lo, "ci_high": hi, "resamples": len(finite),
            "significant": bool(len(finite) and (lo > 0 or hi < 0))}

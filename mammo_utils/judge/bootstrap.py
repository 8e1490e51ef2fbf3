"""Percentile bootstrap over breasts: intervals of one statistic, and paired differences between runs.

One home for both, so an interval and a difference always resample the same way: breasts drawn with
replacement, ``n`` resamples from ``seed``, resamples where the statistic is undefined (AUC with one
class) left out and counted.
"""
from __future__ import annotations

import numpy as np


def resamples(n_items: int, n: int = 1000, seed: int = 0) -> np.ndarray:
    """``n`` x ``n_items`` indices drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n_items, size=(n, n_items))


def _percentiles(values, alpha: float) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def interval(statistic, labels, *predictions, n: int = 1000, seed: int = 0, alpha: float = 0.05,
             indices: np.ndarray | None = None) -> tuple[float, float]:
    """(low, high) percentile interval of ``mean_k statistic(labels, predictions[k])``.

    Several prediction arrays (the seeds of one recipe) share each resample, and the statistic is
    averaged over them: the interval is the one of the mean over seeds that a table reports."""
    y = np.asarray(labels)
    preds = [np.asarray(p, dtype=np.float64) for p in predictions]
    idx = resamples(len(y), n, seed) if indices is None else indices
    return _percentiles([np.mean([statistic(y[i], p[i]) for p in preds]) for i in idx], alpha)


def paired_difference(statistic, labels, preds_a, preds_b, n: int = 2000, seed: int = 0, alpha: float = 0.05,
                      indices: np.ndarray | None = None) -> dict:
    """``mean_s statistic(a_s) - mean_s statistic(b_s)`` on the same breasts, with a percentile interval.

    ``preds_a`` and ``preds_b`` are lists of arrays (one per seed; a single array is one seed). Each
    resample of breasts is applied to every run of both sides: that is what makes it paired, and the
    difference estimates exactly the difference of the seed means a comparison table shows."""
    y = np.asarray(labels)
    a = [np.asarray(p, dtype=np.float64) for p in (preds_a if isinstance(preds_a, list) else [preds_a])]
    b = [np.asarray(p, dtype=np.float64) for p in (preds_b if isinstance(preds_b, list) else [preds_b])]
    if any(len(p) != len(y) for p in a + b):
        from ..errors import UserError

        raise UserError(f"a paired difference needs predictions of the same {len(y)} breasts on both sides")

    def diff(i):
        return np.mean([statistic(y[i], p[i]) for p in a]) - np.mean([statistic(y[i], p[i]) for p in b])

    idx = resamples(len(y), n, seed) if indices is None else indices
    diffs = np.array([diff(i) for i in idx], dtype=np.float64)
    finite = diffs[np.isfinite(diffs)]
    lo, hi = _percentiles(finite, alpha)
    return {"diff": float(diff(np.arange(len(y)))), "ci_low": lo, "ci_high": hi, "resamples": int(len(finite)),
            "significant": bool(len(finite) and (lo > 0 or hi < 0))}

"""Calibration: do the predicted probabilities mean what they say?

Judged on the holdout, per breast (TRIPOD+AI item 12e; Van Calster et al., "Calibration: the Achilles
heel of predictive analytics", BMC Medicine 2019):

* a **reliability diagram**: breasts binned by predicted probability, the mean prediction beside the
  observed cancer rate, with the count of each bin (a point of three breasts says little);
* **ECE**, the expected calibration error: the bin-size-weighted mean gap between the two;
* the **Brier score**, the mean squared error of the probabilities;
* the **calibration slope**: a logistic regression of the outcome on ``logit(p)``; and the **calibration
  intercept** (calibration-in-the-large): the same regression with the slope fixed at 1 (``logit(p)``
  as an offset), the shift that brings the mean prediction onto the observed rate. A calibrated model
  has slope 1 and intercept 0; a slope below 1 means predictions too extreme (overfitting), above 1 too
  timid; an intercept above 0 means predictions too low on average.

Recalibration (Platt's logistic on ``logit(p)``, or isotonic regression) is fitted on the out-of-fold
breasts only and then applied to the holdout, where it is judged separately from the raw model.
Intervals resample patients (:mod:`.bootstrap`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import UserError
from .bootstrap import patient_groups, percentile_interval, resamples

RECALIBRATIONS = ("none", "platt", "isotonic")
EPS = 1e-6  # probabilities are clipped to [EPS, 1 - EPS] before the logit


def logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def reliability_table(labels, probs, bins: int = 10, strategy: str = "uniform") -> pd.DataFrame:
    """One row per non-empty bin: its edges, breasts, cancers, mean prediction and observed rate.
    ``uniform``: equal-width bins on [0, 1]; ``quantile``: equal-count bins."""
    y, p = np.asarray(labels, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, bins + 1)
    elif strategy == "quantile":
        edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1))) if len(p) else np.array([0.0, 1.0])
    else:
        raise UserError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    table = pd.DataFrame({"bin": idx, "y": y, "p": p}).groupby("bin").agg(
        n=("y", "size"), cancers=("y", "sum"), mean_predicted=("p", "mean"), observed=("y", "mean")).reset_index()
    table.insert(1, "low", edges[table.bin])
    table.insert(2, "high", edges[table.bin + 1])
    table["cancers"] = table.cancers.astype(int)
    return table


def ece(labels, probs, bins: int = 10) -> float:
    """Expected calibration error over ``bins`` equal-width bins, the bins of :func:`reliability_table`
    (Naeini et al., AAAI 2015): ``sum_b n_b / N * |observed_b - mean predicted_b|``."""
    y, p = np.asarray(labels, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    if not len(y):
        return float("nan")
    idx = np.clip(np.searchsorted(np.linspace(0.0, 1.0, bins + 1), p, side="right") - 1, 0, bins - 1)
    gap = np.bincount(idx, weights=y, minlength=bins) - np.bincount(idx, weights=p, minlength=bins)
    return float(np.abs(gap).sum() / len(y))


def brier(labels, probs) -> float:
    y, p = np.asarray(labels, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    return float(np.mean((p - y) ** 2)) if len(y) else float("nan")


def logistic_fit(x, y, iterations: int = 50) -> tuple[float, float]:
    """(slope, intercept) of the maximum-likelihood logistic regression of ``y`` on one covariate, by
    Newton-Raphson (two parameters: fast enough for every bootstrap resample). (NaN, NaN) with one
    class, or when the classes are separated and the estimate runs off to infinity (no convergence)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(np.unique(y)) < 2:
        return float("nan"), float("nan")
    X = np.column_stack([x, np.ones_like(x)])
    beta = np.zeros(2)
    for _ in range(iterations):
        mu = 1 / (1 + np.exp(-np.clip(X @ beta, -35, 35)))
        hessian = X.T @ (X * (mu * (1 - mu))[:, None]) + 1e-10 * np.eye(2)
        step = np.linalg.solve(hessian, X.T @ (y - mu))
        beta += step
        if np.abs(beta).max() > 1e3:
            return float("nan"), float("nan")
        if np.abs(step).max() < 1e-10:
            return float(beta[0]), float(beta[1])
    return float("nan"), float("nan")


def intercept_in_the_large(labels, probs) -> float:
    """The intercept ``a`` of ``logit P(y) = a + logit(p)`` (slope fixed at 1): the root of the score
    ``sum(y - expit(a + logit(p)))``, which falls monotonically in ``a``. NaN with one class."""
    from scipy.optimize import brentq
    from scipy.special import expit

    y, offset = np.asarray(labels, dtype=np.float64), logit(probs)
    if len(np.unique(y)) < 2:
        return float("nan")
    bound = 2 * np.log((1 - EPS) / EPS) + 1  # beyond it every prediction sits at the clipped ends
    return float(brentq(lambda a: np.sum(y - expit(a + offset)), -bound, bound, xtol=1e-12))


def slope_intercept(labels, probs) -> tuple[float, float]:
    """(slope, intercept): the slope of the logistic regression of the outcome on ``logit(p)`` (Cox,
    Biometrika 1958), and the calibration intercept with the slope fixed at 1 (calibration-in-the-large,
    :func:`intercept_in_the_large`); NaN with one class, and a slope of NaN when the classes are separated."""
    return logistic_fit(logit(probs), labels)[0], intercept_in_the_large(labels, probs)


def summary(breasts: pd.DataFrame, pred: str = "pred", bins: int = 10, n_boot: int = 500, seed: int = 0,
            alpha: float = 0.05) -> dict:
    """ECE, Brier, slope and intercept of per-breast probabilities, each with an interval over patients."""
    y, p = breasts.cancer.to_numpy(), breasts[pred].to_numpy(dtype=np.float64)
    stats = {"ece": lambda yy, pp: ece(yy, pp, bins), "brier": brier,
             "slope": lambda yy, pp: slope_intercept(yy, pp)[0], "intercept": lambda yy, pp: slope_intercept(yy, pp)[1]}
    out = {"breasts": len(y), "cancer_breasts": int(np.sum(y)), "bins": bins,
           "mean_predicted": float(p.mean()) if len(p) else float("nan"),
           "observed_rate": float(np.mean(y)) if len(y) else float("nan")}
    if not len(y):
        return {**out, **{k: float("nan") for k in stats}, **{f"{k}_ci": [float("nan")] * 2 for k in stats}}
    idx = resamples(len(y), n_boot, seed, patient_groups(breasts))
    slopes = np.array([slope_intercept(y[i], p[i]) for i in idx]).reshape(-1, 2)
    for name, fn in stats.items():
        out[name] = fn(y, p)
        if name == "slope":
            values = slopes[:, 0]
        elif name == "intercept":
            values = slopes[:, 1]
        else:
            values = [fn(y[i], p[i]) for i in idx]
        out[f"{name}_ci"] = list(percentile_interval(values, alpha))
    return out


def fit_recalibration(labels, probs, method: str = "platt"):
    """A function ``p -> recalibrated p`` fitted on these (out-of-fold) breasts: ``platt``, a logistic
    regression on ``logit(p)`` (Platt, 1999); ``isotonic``, a monotone step function (Zadrozny &
    Elkan, KDD 2002). ``none``: the identity."""
    if method not in RECALIBRATIONS:
        raise UserError(f"recalibration must be one of {RECALIBRATIONS}, got {method!r}")
    if method == "none":
        return lambda p: np.asarray(p, dtype=np.float64)
    y, p = np.asarray(labels).astype(int), np.asarray(probs, dtype=np.float64)
    if len(np.unique(y)) < 2:
        raise UserError(f"{method} recalibration needs cancer and cancer-free breasts out of fold")
    if method == "platt":
        a, b = logistic_fit(logit(p), y)
        if a != a:
            raise UserError("platt recalibration: the out-of-fold breasts are perfectly separated; try isotonic")
        return lambda q: 1 / (1 + np.exp(-(a * logit(q) + b)))
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
    return lambda q: iso.predict(np.asarray(q, dtype=np.float64))


def judge(oof_breasts: pd.DataFrame, holdout_breasts: pd.DataFrame, recalibration: str = "none", bins: int = 10,
          n_boot: int = 500, seed: int = 0) -> dict:
    """Calibration of the holdout breasts, raw and (when asked) recalibrated by a map fitted on the OOF
    breasts: ``{"raw": {...}, "<method>": {...}, "reliability": {name: table}}``. Without a holdout the
    OOF breasts are judged, and a recalibration's ``fitted_on`` says it is judged where it was fitted."""
    target = holdout_breasts if len(holdout_breasts) else oof_breasts
    out = {"judged_on": "holdout" if len(holdout_breasts) else "out of fold", "raw": summary(target, bins=bins,
                                                                                               n_boot=n_boot, seed=seed)}
    tables = {"raw": reliability_table(target.cancer, target.pred, bins)}
    if recalibration != "none":
        mapped = fit_recalibration(oof_breasts.cancer, oof_breasts.pred, recalibration)(target.pred)
        target = target.assign(recalibrated=mapped)
        fitted_on = "out of fold" if len(holdout_breasts) else "out of fold, on the breasts it is judged on: optimistic"
        out[recalibration] = {**summary(target, "recalibrated", bins, n_boot, seed), "fitted_on": fitted_on}
        tables[recalibration] = reliability_table(target.cancer, mapped, bins)
    out["reliability"] = tables
    return out


def summary_table(judged: dict) -> pd.DataFrame:
    """The figures of :func:`judge` side by side: one column per set of probabilities (raw, recalibrated)."""
    return pd.DataFrame({name: v for name, v in judged.items() if name not in ("judged_on", "reliability")})

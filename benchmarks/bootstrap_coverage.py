"""Coverage of 95 % bootstrap intervals on correlated breasts: resampling breasts against patients.

    .venv/bin/python benchmarks/bootstrap_coverage.py [--replications 1000] [--patients 100]

Simulated screening data with a known truth: each patient has two breasts; a breast is a cancer
breast with probability ``--prevalence``; its score is ``rho * u + sqrt(1 - rho^2) * e + delta * cancer``
with ``u`` the patient's own level (shared by both breasts: density, machine, positioning) and ``e``
the breast's noise, both standard normal. So specificity at threshold ``t`` is ``Phi(t)``, and AUC is
``Phi(delta / sqrt(2))``. Each replication draws a data set, builds the 95 % percentile interval of
specificity (at t = 1) and of AUC with the package's bootstrap (:mod:`mammo_utils.judge.bootstrap`),
once over breasts and once over patients, and counts how often the interval holds the truth. Prints
the coverage of each (the goal: near 0.95) with its Monte Carlo standard error.
"""
from __future__ import annotations

import argparse
import time
from math import erf, sqrt

import numpy as np

from mammo_utils import metrics
from mammo_utils.judge.bootstrap import interval, ratio_interval, resample_weights


def phi(x: float) -> float:
    return 0.5 * (1 + erf(x / sqrt(2)))


def simulate(rng, patients: int, prevalence: float, rho: float, delta: float):
    u = np.repeat(rng.standard_normal(patients), 2)
    cancer = rng.random(2 * patients) < prevalence
    score = rho * u + sqrt(1 - rho ** 2) * rng.standard_normal(2 * patients) + delta * cancer
    return cancer, score, np.repeat(np.arange(patients), 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replications", type=int, default=1000, help="data sets drawn (specificity)")
    ap.add_argument("--auc-replications", type=int, default=200, help="data sets drawn for AUC (slower: sklearn)")
    ap.add_argument("--patients", type=int, default=100)
    ap.add_argument("--resamples", type=int, default=500)
    ap.add_argument("--prevalence", type=float, default=0.25)
    ap.add_argument("--rho", type=float, default=0.8, help="correlation of a patient's two breast scores")
    ap.add_argument("--delta", type=float, default=1.5, help="shift of a cancer breast's score")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    threshold, truth_spec, truth_auc = 1.0, phi(1.0), phi(a.delta / sqrt(2))
    print(f"{a.patients} patients x 2 breasts, prevalence {a.prevalence}, score correlation {a.rho ** 2:.2f} "
          f"within a patient; truth: specificity {truth_spec:.4f} at t = {threshold}, AUC {truth_auc:.4f}")
    for stat, reps in (("specificity", a.replications), ("auc", a.auc_replications)):
        hits, widths, t0 = {"breasts": 0, "patients": 0}, {"breasts": [], "patients": []}, time.perf_counter()
        for r in range(reps):
            cancer, score, groups = simulate(rng, a.patients, a.prevalence, a.rho, a.delta)
            for name, g in (("breasts", None), ("patients", groups)):
                if stat == "specificity":
                    neg = ~cancer
                    lo, hi = ratio_interval(neg & (score < threshold), neg,
                                            resample_weights(len(score), a.resamples, r, g))
                    truth = truth_spec
                else:
                    lo, hi = interval(metrics.auc, cancer, score, n=a.resamples, seed=r, groups=g)
                    truth = truth_auc
                hits[name] += lo <= truth <= hi
                widths[name].append(hi - lo)
        for name in hits:
            cov = hits[name] / reps
            print(f"{stat:12s} resampling {name:8s}: coverage {cov:.3f} (MC s.e. {sqrt(cov * (1 - cov) / reps):.3f}), "
                  f"mean width {np.mean(widths[name]):.4f}, {reps} replications x {a.resamples} resamples")
        print(f"{stat:12s} {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

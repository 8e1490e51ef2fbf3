"""The locked holdout: patients set aside before folds, sampling or training see the data.

Patients set aside before anything else, grouped by patient and stratified by cancer
and site, per source for combined datasets: within each stratum the patients are ordered by a hash
of ``(seed, patient_id)`` and the first ``round(fraction * n)`` are taken. So the holdout is a function of the patient ids, the
fraction and the seed only, and its fingerprint (a hash of its sorted patient ids, the fraction and
the seed) says whether two runs were judged on the same patients. A dataset (or, combined, a
source) with an official test split that has labels (``official_split == "test"``) uses that
split instead. Patients linked by a duplicated image (``duplicate_group``, see
:func:`~mammo_utils.learn.sampling.split_groups`) are one unit: all in the holdout or none.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from .. import metrics, paths, tables
from ..errors import UserError
from .sampling import split_groups


def _rank(seed: int, patient_id) -> str:
    return hashlib.sha1(f"{seed}:{patient_id}".encode()).hexdigest()


def fingerprint(patient_ids, fraction: float, seed: int) -> str:
    """A short hash of the holdout's sorted patient ids, its fraction and its seed."""
    ids = ",".join(sorted(str(p) for p in set(patient_ids)))
    return hashlib.sha1(f"{ids}|{fraction:g}|{seed}".encode()).hexdigest()[:16]


def split_holdout(df: pd.DataFrame, fraction: float = 0.15, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(holdout rows, the other rows, description with the fingerprint). See the module docstring."""
    if not 0 <= fraction < 1:
        raise UserError(f"holdout_fraction must be in [0, 1), got {fraction}")
    chosen, hows = set(), []
    df = df.assign(_unit=split_groups(df))  # a patient, or patients linked by a duplicated image
    for source, part in (df.groupby(df.source.fillna(""), sort=True) if "source" in df else [("", df)]):
        label = f"{source}: " if source else ""
        if "official_split" in part and (part.official_split == "test").any():
            chosen |= set(part[part.official_split == "test"]._unit)
            hows.append(f"{label}the dataset's official test split")
            continue
        extra = {"site_id": ("site_id", "first")} if "site_id" in part else {}
        units = part.groupby("_unit").agg(cancer=("cancer", "max"), **extra).astype(object).fillna("")
        for _, stratum in units.groupby(list(units.columns)):
            order = sorted(stratum.index, key=lambda p: _rank(seed, p))
            chosen |= set(order[:round(fraction * len(order))])
        hows.append(f"{label}{fraction:g} of the patients, stratified by cancer{''.join(', ' + c for c in extra)}, "
                    f"seed {seed}")
    if df._unit.astype(str).ne(df.patient_id.astype(str)).any():
        hows.append("patients linked by a duplicated image kept together")
    how = "; ".join(hows)
    is_holdout = df._unit.isin(chosen)
    df = df.drop(columns="_unit")
    chosen = set(df.patient_id[is_holdout])
    holdout, rest = df[is_holdout].reset_index(drop=True), df[~is_holdout].reset_index(drop=True)
    if fraction and rest.patient_id.nunique() < 2:
        raise UserError(f"holdout_fraction {fraction} leaves {rest.patient_id.nunique()} patient(s) to train on")
    info = {"fingerprint": fingerprint(chosen, fraction, seed), "fraction": fraction, "seed": seed, "how": how,
            "patients": len(chosen), "images": int(is_holdout.sum()),
            "cancer_breasts": int(metrics.aggregate_breasts(holdout.assign(pred=0.0)).cancer.sum()) if len(holdout) else 0}
    return holdout, rest, info


def write_holdout(run, holdout: pd.DataFrame, info: dict) -> Path:
    """``<run>/holdout.csv`` (its images, with patient_id and image_id) and ``<run>/holdout.json``."""
    keep = [c for c in ("patient_id", "image_id", "laterality", "view", "site_id", "machine_id", "age", "implant",
                        "source", "cancer")
            if c in holdout]
    Path(run).mkdir(parents=True, exist_ok=True)
    holdout[keep].to_csv(paths.holdout_csv(run), index=False)
    paths.holdout_json(run).write_text(json.dumps(info, indent=2))
    return paths.holdout_csv(run)


def read_holdout(run) -> tuple[pd.DataFrame, dict]:
    if not paths.holdout_csv(run).exists():
        raise UserError(f"{paths.holdout_csv(run)} not found: run notebook 03 (it sets the holdout aside)")
    return tables.read_csv(paths.holdout_csv(run)), json.loads(paths.holdout_json(run).read_text())

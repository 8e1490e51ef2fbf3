"""Which images to train on: paired-breast undersampling, patient-grouped folds, balanced batches.

No torch import here: the batch sampler is a plain iterable of index lists, which torch's
DataLoader accepts as ``batch_sampler``.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd


def patient_labels(df: pd.DataFrame) -> pd.Series:
    """1 for a patient with at least one cancer image, else 0 (indexed by patient_id)."""
    return df.groupby("patient_id").cancer.max().astype(int)


def paired_breast_undersample(df: pd.DataFrame, neg_per_pos: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Every image of every cancer patient plus ``round(neg_per_pos * n_cancer_patients)`` cancer-free
    patients (all their images), drawn with ``seed``.

    Why: a cancer patient's healthy contralateral breast is the best matched control there is (same
    patient, machine, age, density, day), so the model must look at the lesion, not at the site.
    Extra negative patients restore the prevalence the model will meet. Rows keep their order.
    """
    if neg_per_pos < 0:
        raise ValueError(f"neg_per_pos must be >= 0, got {neg_per_pos}")
    labels = patient_labels(df)
    positives = labels.index[labels == 1]
    negatives = np.sort(labels.index[labels == 0].to_numpy())
    n_neg = min(int(round(neg_per_pos * len(positives))), len(negatives))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(negatives, size=n_neg, replace=False) if n_neg else np.array([], dtype=negatives.dtype)
    keep = set(positives.tolist()) | set(chosen.tolist())
    return df[df.patient_id.isin(keep)].reset_index(drop=True)


def patient_folds(df: pd.DataFrame, n_splits: int = 5, seed: int = 0) -> pd.DataFrame:
    """Copy of ``df`` with an int ``fold`` column in 0..n_splits-1.

    No patient is in two folds (grouped by patient_id); folds are stratified on patient-level
    cancer crossed with site (scikit-learn's StratifiedGroupKFold), so each fold has the same
    share of cancer patients from each site.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    n_patients = df.patient_id.nunique()
    if n_patients < n_splits:
        raise ValueError(f"{n_patients} patients cannot fill {n_splits} folds; lower n_splits")
    labels = patient_labels(df)
    strata = df.patient_id.map(labels).astype(int) * 100
    if "site_id" in df:
        strata = strata + df.groupby("patient_id").site_id.transform("first").astype(int)
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    fold = np.full(len(df), -1, dtype=int)
    import warnings
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        for k, (_, val) in enumerate(splitter.split(np.zeros(len(df)), strata.to_numpy(), df.patient_id.to_numpy())):
            fold[val] = k
    out = df.copy()
    out["fold"] = fold
    return out


def pos_weight(labels) -> float:
    """BCE positive-class weight n_negative / n_positive (1.0 when a class is absent)."""
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return n_neg / n_pos if n_pos and n_neg else 1.0


class BalancedBatchSampler:
    """Batches with a fixed fraction of positives, instead of throwing negatives away.

    Each batch holds ``round(batch_size * pos_fraction)`` positives (cycled, reshuffled when used
    up) and the rest negatives drawn without replacement; an epoch ends when every negative was
    seen once. Deterministic for a seed; each epoch (``set_epoch``) draws a new order.
    """

    def __init__(self, labels, batch_size: int, pos_fraction: float = 0.25, seed: int = 0, drop_last: bool = False):
        y = np.asarray(labels).astype(bool)
        self.pos, self.neg = np.flatnonzero(y), np.flatnonzero(~y)
        if not len(self.pos) or not len(self.neg):
            raise ValueError("BalancedBatchSampler needs both positive and negative samples")
        if not 0 < pos_fraction < 1:
            raise ValueError(f"pos_fraction must be in (0, 1), got {pos_fraction}")
        self.batch_size, self.seed, self.epoch, self.drop_last = batch_size, seed, 0, drop_last
        self.n_pos = max(1, int(round(batch_size * pos_fraction)))
        self.n_neg = batch_size - self.n_pos

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full = len(self.neg) // self.n_neg
        return full if self.drop_last or len(self.neg) % self.n_neg == 0 else full + 1

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        neg = rng.permutation(self.neg)
        pos, p = rng.permutation(self.pos), 0
        for b in range(len(self)):
            negs = neg[b * self.n_neg:(b + 1) * self.n_neg]
            take = []
            while len(take) < self.n_pos:
                if p == len(pos):
                    pos, p = rng.permutation(self.pos), 0
                take.append(pos[p])
                p += 1
            batch = np.concatenate([negs, np.array(take)])
            yield rng.permutation(batch).tolist()


def epoch_sizes(df: pd.DataFrame, batch_size: int, pos_fraction: float = 0.25) -> pd.DataFrame:
    """Images seen per epoch and positives among them, for each sampling strategy on ``df``."""
    y = df.cancer.to_numpy().astype(bool)
    n_neg, n_pos = int((~y).sum()), int(y.sum())
    n_batches = math.ceil(n_neg / (batch_size - max(1, round(batch_size * pos_fraction))))
    bal_pos = n_batches * max(1, round(batch_size * pos_fraction))
    return pd.DataFrame([
        {"strategy": "all images, shuffled", "images_per_epoch": len(df), "positives_per_epoch": n_pos},
        {"strategy": f"balanced sampler ({pos_fraction:.0%} positives)", "images_per_epoch": n_neg + bal_pos,
         "positives_per_epoch": bal_pos},
    ])


def strategy_table(df: pd.DataFrame, ratios=(0.0, 1.0, 3.0), batch_size: int = 16, pos_fraction: float = 0.25,
                   seed: int = 0) -> pd.DataFrame:
    """Images per epoch, positives per epoch and images discarded for each sampling strategy."""
    rows = []
    base = epoch_sizes(df, batch_size, pos_fraction)
    for r in base.itertuples():
        rows.append({"strategy": r.strategy, "images_per_epoch": r.images_per_epoch,
                     "positives_per_epoch": r.positives_per_epoch, "discarded": 0})
    for ratio in ratios:
        s = paired_breast_undersample(df, ratio, seed)
        rows.append({"strategy": f"paired undersampling, {ratio:g} neg/pos patient", "images_per_epoch": len(s),
                     "positives_per_epoch": int(s.cancer.sum()), "discarded": len(df) - len(s)})
    return pd.DataFrame(rows)

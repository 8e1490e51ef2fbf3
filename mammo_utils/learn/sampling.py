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


STRATA_COLUMNS = ("source", "site_id")


def split_groups(df: pd.DataFrame) -> pd.Series:
    """Per image, the unit no split may cut: its patient, joined with every patient it shares a
    ``duplicate_group`` with (an import links patients whose images are duplicates: the same pixels
    under two ids are most likely one woman). Connected components over patients and groups, so a
    patient named in two groups joins both; each unit is named by its smallest patient id."""
    if "duplicate_group" not in df:
        return df.patient_id
    linked = df.duplicate_group.fillna("").astype(str).str.strip()
    if not linked.ne("").any():
        return df.patient_id  # nothing linked: the patients themselves, as before (same folds, same holdout)
    from ..datasets.duplicates import patient_groups

    patients = df.patient_id.astype(str)
    unit = patient_groups([(p, "\0" + g) for p, g in zip(patients, linked) if g])
    return patients.map(lambda p: unit.get(p, p))


def patient_strata(df: pd.DataFrame) -> pd.Series:
    """Per image, a stratum code of its patient: patient-level cancer x source x site (where present)."""
    keys = [df.patient_id.map(patient_labels(df)).astype(str)]
    for col in STRATA_COLUMNS:
        if col in df:
            keys.append(df.groupby("patient_id")[col].transform("first").astype(object).fillna("").astype(str))
    return pd.Series(pd.factorize(pd.Series(["|".join(k) for k in zip(*keys)]))[0], index=df.index)


def paired_breast_undersample(df: pd.DataFrame, neg_per_pos: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Every image of every cancer patient plus ``round(neg_per_pos * n_cancer_patients)`` cancer-free
    patients (all their images), drawn with ``seed``.

    Why: a cancer patient's healthy contralateral breast is the best matched control there is (same
    patient, machine, age, density, day), so the model must look at the lesion, not at the site.
    Extra negative patients restore the prevalence the model will meet. Rows keep their order.
    """
    if neg_per_pos < 0:
        from ..errors import UserError

        raise UserError(f"neg_per_pos must be >= 0, got {neg_per_pos}")
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

    No patient is in two folds (grouped by patient_id, which :func:`~mammo_utils.datasets.combine`
    keeps unique across sources, and by :func:`split_groups`: patients linked by a duplicated image
    share a fold); folds are stratified on patient-level cancer crossed with site and source
    (scikit-learn's StratifiedGroupKFold), so each fold has the same share of cancer patients from
    each site and each dataset. A table without any cancer is refused: no fold could be stratified,
    trained or scored on it.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    from ..errors import UserError

    if n_splits < 2:
        raise UserError(f"n_splits must be at least 2 (one fold validates while the others train), got {n_splits}")
    groups = split_groups(df)
    n_patients, n_groups = df.patient_id.nunique(), groups.nunique()
    if n_groups < n_splits:
        linked = f" ({n_patients} patients; patients sharing a duplicated image count once)" \
            if n_groups < n_patients else ""
        raise UserError(f"{n_groups} patients{linked} cannot fill {n_splits} folds; lower n_splits")
    cancer = patient_labels(df)
    if not cancer.any():
        raise UserError(f"none of the {n_patients} patients has cancer = 1: folds stratified by cancer, training and "
                        f"AUC all need both classes; check the table (for an imported dataset, its --label mapping)")
    if cancer.sum() < n_splits:
        import warnings

        warnings.warn(f"only {int(cancer.sum())} cancer patient(s) for {n_splits} folds: at least "
                      f"{n_splits - int(cancer.sum())} fold(s) validate without a cancer (AUC undefined there)",
                      stacklevel=2)
    strata = patient_strata(df)
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    fold = np.full(len(df), -1, dtype=int)
    import warnings
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        for k, (_, val) in enumerate(splitter.split(np.zeros(len(df)), strata.to_numpy(), groups.to_numpy())):
            fold[val] = k
    out = df.copy()
    out["fold"] = fold
    return out


STRATEGIES = ("all", "paired")
LABEL_CONTROLS = ("none", "shuffled")


def shuffle_breast_labels(df: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The negative control: cancer labels permuted between breasts (all images of a breast move
    together), keeping the number of cancer breasts. A pipeline that still scores above chance on
    held-out data with these labels is leaking information."""
    from ..tables import with_prediction_id

    df = with_prediction_id(df)
    breasts = df.groupby("prediction_id", sort=True).cancer.max()
    rng = np.random.default_rng([seed, 7])
    shuffled = pd.Series(rng.permutation(breasts.to_numpy()), index=breasts.index)
    out = df.copy()
    out["cancer"] = out.prediction_id.map(shuffled).astype(int)
    return out


def make_folds(df: pd.DataFrame, strategy: str = "all", neg_per_pos: float = 1.0, n_splits: int = 5, seed: int = 0,
               label_control: str = "none") -> pd.DataFrame:
    """Every image of the training table with its ``fold`` and a boolean ``sampled`` column: optional
    label control, patient-grouped stratified folds on *every* image, then the sampling strategy.
    Shared by notebook 03 and ``python -m mammo_utils folds``.

    The strategy picks training images only (``sampled``); a fold validates on all of its images, so
    epoch selection and the threshold meet the prevalence of the data, not the undersampled one.
    ``strategy``: ``all`` samples every image (pair it with the balanced sampler in training);
    ``paired`` samples every cancer patient and ``neg_per_pos`` cancer-free patients per cancer patient.
    ``label_control``: ``none`` or ``shuffled`` (see :func:`shuffle_breast_labels`).
    """
    from ..errors import UserError

    if strategy not in STRATEGIES:
        raise UserError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if label_control not in LABEL_CONTROLS:
        raise UserError(f"label_control must be one of {LABEL_CONTROLS}, got {label_control!r}")
    if label_control == "shuffled":
        df = shuffle_breast_labels(df, seed)
    out = patient_folds(df, n_splits=n_splits, seed=seed)
    if strategy == "paired":
        kept = set(paired_breast_undersample(out, neg_per_pos, seed=seed).patient_id)
        out["sampled"] = out.patient_id.isin(kept)
    else:
        out["sampled"] = True
    return out


def folds_summary(folds: pd.DataFrame) -> pd.DataFrame:
    """Per fold: images, patients, cancer images and cancer breasts (what it validates on), and the
    images the strategy sampled for training (the fold's share of the others' training set)."""
    from ..tables import with_prediction_id

    f = with_prediction_id(folds)
    if "sampled" not in f:
        f = f.assign(sampled=True)
    out = f.groupby("fold").agg(images=("image_id", "size"), patients=("patient_id", "nunique"),
                                cancer_images=("cancer", "sum"), sampled_images=("sampled", "sum"))
    out["cancer_breasts"] = f.groupby(["fold", "prediction_id"]).cancer.max().groupby("fold").sum()
    out["breast_prevalence"] = out.cancer_breasts / f.groupby("fold").prediction_id.nunique()
    return out


def pos_weight(labels) -> float:
    """BCE positive-class weight n_negative / n_positive (1.0 when a class is absent)."""
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return n_neg / n_pos if n_pos and n_neg else 1.0


class BalancedBatchSampler:
    """Batches with a fixed share of positives, instead of throwing negatives away.

    Each global batch (``batch_size * world_size`` samples) holds ``round(global * pos_fraction)``
    positives (cycled, reshuffled when used up) and the rest negatives drawn without replacement; an
    epoch ends when every negative was seen once. Under DDP each rank takes every ``world_size``-th
    positive and negative of each global batch: distinct samples per rank, the same share of
    positives, and together the same batches a single process with the global batch size would see.
    Deterministic for a seed; each epoch (``set_epoch``) draws a new order.
    """

    def __init__(self, labels, batch_size: int, pos_fraction: float = 0.25, seed: int = 0, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1):
        y = np.asarray(labels).astype(bool)
        self.pos, self.neg = np.flatnonzero(y), np.flatnonzero(~y)
        if not len(self.pos) or not len(self.neg):
            raise ValueError("BalancedBatchSampler needs both positive and negative samples")
        if not 0 < pos_fraction < 1:
            raise ValueError(f"pos_fraction must be in (0, 1), got {pos_fraction}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.seed, self.epoch, self.drop_last, self.rank, self.world_size = seed, 0, drop_last, rank, world_size
        global_batch = batch_size * world_size
        self.n_pos = max(world_size, int(round(global_batch * pos_fraction)))
        self.n_neg = global_batch - self.n_pos
        if self.n_neg < world_size:
            raise ValueError(f"batch_size {batch_size} leaves no room for negatives at pos_fraction {pos_fraction}")

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
            if len(negs) < self.n_neg and self.world_size > 1:  # last, short batch: top up so every rank gets some
                negs = np.concatenate([negs, rng.choice(self.neg, self.n_neg - len(negs), replace=False)])
            take = []
            while len(take) < self.n_pos:
                if p == len(pos):
                    pos, p = rng.permutation(self.pos), 0
                take.append(pos[p])
                p += 1
            mine = np.concatenate([negs[self.rank::self.world_size], np.array(take)[self.rank::self.world_size]])
            # A generator of its own for the order inside the batch, so every rank's main stream stays identical.
            yield np.random.default_rng([self.seed, self.epoch, b, self.rank]).permutation(mine).tolist()


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


def data_breast_prevalence(folds_csv) -> float:
    """The share of cancer breasts in the whole table of folds.csv (every non-holdout image, before any
    undersampling): the prior a breast without a readable image is given at test time."""
    from ..tables import read_csv, with_prediction_id

    folds = with_prediction_id(read_csv(folds_csv))
    return float(folds.groupby("prediction_id").cancer.max().mean())

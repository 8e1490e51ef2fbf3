"""torch Dataset over preprocessed PNGs, mammography augmentations, and DataLoader factories.

Augmentations are plain numpy/OpenCV on the uint8/uint16 image (one warpAffine per sample), which is
cheaper on 2 CPU cores than a chain of tensor transforms.
"""
from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from .. import paths
from ..prepare.png import load_png
from ..tables import read_csv, with_prediction_id
from .config import AugmentConfig


def augment(img: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Random flip, small affine, brightness/contrast/gamma and coarse dropout on a [0, 1] image."""
    h, w = img.shape
    if rng.random() < cfg.vflip:
        img = img[::-1]
    if rng.random() < cfg.hflip:
        img = img[:, ::-1]
    if cfg.rotate_deg or cfg.scale or cfg.shift:
        angle = rng.uniform(-cfg.rotate_deg, cfg.rotate_deg)
        scale = 1.0 + rng.uniform(-cfg.scale, cfg.scale)
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        m[:, 2] += rng.uniform(-cfg.shift, cfg.shift, 2) * (w, h)
        img = cv2.warpAffine(np.ascontiguousarray(img), m, (w, h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if cfg.gamma:
        img = np.power(np.clip(img, 0, 1), np.float32(np.exp(rng.uniform(-cfg.gamma, cfg.gamma))))
    if cfg.contrast or cfg.brightness:
        img = img * np.float32(1 + rng.uniform(-cfg.contrast, cfg.contrast)) + np.float32(
            rng.uniform(-cfg.brightness, cfg.brightness))
    img = np.clip(img, 0, 1)
    for _ in range(cfg.dropout_boxes):
        bh, bw = int(h * cfg.dropout_size * rng.random()), int(w * cfg.dropout_size * rng.random())
        y, x = rng.integers(0, max(1, h - bh)), rng.integers(0, max(1, w - bw))
        img[y:y + bh, x:x + bw] = 0
    return np.ascontiguousarray(img, dtype=np.float32)


class MammoDataset(Dataset):
    """Rows of a manifest (with ``abs_path``) -> (image tensor 1xHxW, {"cancer", "index"}).

    A training sample is asked for by a key ``(index, epoch, rank, draw)`` that the sampler side
    makes in the main process (:class:`KeyedDraws`); its augmentation comes from
    ``np.random.default_rng([seed, epoch, rank, draw, index])``. The dataset holds no epoch of its
    own: persistent workers keep a copy of it, and a copy's state would never move on. So every draw
    of an epoch, repeats of one positive included, gets its own augmentation, and a run is the same
    whatever the number of workers. A plain int index (validation, previews) is never augmented.
    """

    def __init__(self, df: pd.DataFrame, train: bool = False, augment_cfg: AugmentConfig | None = None,
                 seed: int = 0, meta_columns=(), aux_columns=()):
        self.df = df.reset_index(drop=True)
        self.paths = self.df.abs_path.tolist()
        self.labels = self.df.cancer.to_numpy().astype(np.float32) if "cancer" in self.df else np.zeros(len(self.df), np.float32)
        self.train, self.cfg, self.seed = train, augment_cfg or AugmentConfig(), seed
        self.extras = TableExtras(self.df, meta_columns, aux_columns)

    def __len__(self) -> int:
        return len(self.paths)

    def image_predictions(self, preds: np.ndarray) -> np.ndarray:
        """Per-row predictions from per-sample ones (a sample is a row here)."""
        return preds

    def __getitem__(self, key):
        i = int(key[0]) if isinstance(key, tuple) else int(key)
        img = load_png(self.paths[i])
        if self.train:
            if not isinstance(key, tuple):
                raise TypeError("a training dataset is indexed by (index, epoch, rank, draw) keys: see KeyedDraws")
            img = augment(img, self.cfg, np.random.default_rng([self.seed, *key[1:], i]))
        x = torch.from_numpy(np.ascontiguousarray(img))[None]
        return x, {"cancer": torch.tensor(self.labels[i]), "index": torch.tensor(i), **self.extras.of([i])}


class TableExtras:
    """What a sample carries beside its pixels: raw metadata values (the model encodes them) and the
    auxiliary targets' values, taken from the table's rows."""

    def __init__(self, df: pd.DataFrame, meta_columns=(), aux_columns=()):
        from .metadata import NUMERIC, as_text, raw_values

        self.meta_columns, self.aux_columns = list(meta_columns), list(aux_columns)
        self.missing = {c: float("nan") if c in NUMERIC else "" for c in self.meta_columns}  # a padded view's values
        records = df.to_dict("records") if self.meta_columns or self.aux_columns else []
        self.meta = [raw_values(r, self.meta_columns) for r in records] if self.meta_columns else None
        self.aux = [{c: as_text(r.get(c)) for c in self.aux_columns} for r in records] if self.aux_columns else None

    def of(self, rows: list[int], views: int | None = None) -> dict:
        """Extras of one image (``views`` None) or of a breast's rows, padded to ``views`` with missing values."""
        out = {}
        if self.meta is not None:
            if views is None:
                out["meta"] = self.meta[rows[0]]
            else:
                per_view = [self.meta[r] for r in rows] + [self.missing] * (views - len(rows))
                out["meta"] = {c: [v[c] for v in per_view] for c in self.meta_columns}
        if self.aux is not None:
            out["aux"] = self.aux[rows[0]]
        return out


STANDARD_VIEW_ORDER = {"CC": 0, "MLO": 1}


class WithExtras(Dataset):
    """An image dataset whose samples also carry their rows' metadata (inference: the models encode it)."""

    def __init__(self, images: Dataset, df: pd.DataFrame, meta_columns=()):
        self.images, self.extras = images, TableExtras(df.reset_index(drop=True), meta_columns)

    def __len__(self) -> int:
        return len(self.images)

    def image_predictions(self, preds: np.ndarray) -> np.ndarray:
        return preds

    def __getitem__(self, i):
        x, info = self.images[i]
        return x, {**info, **self.extras.of([int(i)])}


class BreastViews(Dataset):
    """The breasts of an image dataset, for breast-level view fusion: a sample is up to ``max_views``
    images of one breast (CC and MLO first) as a Kx1xHxW tensor, a ``view_mask`` of the views that
    exist (and loaded: a file that failed is masked out), the breast's label, and its rows' extras.

    A training key ``(breast, epoch, rank, draw)`` asks the image dataset for each view under its own
    key ``(row, epoch, rank, draw * max_views + view)``, so every view gets its own augmentation."""

    def __init__(self, images: Dataset, df: pd.DataFrame, meta_columns=(), aux_columns=(), max_views: int = 4):
        df = with_prediction_id(df).reset_index(drop=True)
        order = df.assign(_v=df.view.map(STANDARD_VIEW_ORDER).fillna(9), _r=np.arange(len(df)))
        grouped = list(order.sort_values(["prediction_id", "_v", "_r"], kind="stable").groupby("prediction_id",
                                                                                                sort=False))
        self.images, self.max_views = images, max_views
        self.groups = [g._r.tolist()[:max_views] for _, g in grouped]
        self.breast_of_row = df.prediction_id.map({pid: b for b, (pid, _) in enumerate(grouped)}).to_numpy()
        cancer = df.cancer.to_numpy() if "cancer" in df else np.zeros(len(df))
        self.labels = np.array([cancer[rows].max() for rows in self.groups], np.float32)
        self.extras = TableExtras(df, meta_columns, aux_columns)

    def __len__(self) -> int:
        return len(self.groups)

    def image_predictions(self, preds: np.ndarray) -> np.ndarray:
        """Per-row predictions: every image of a breast carries the breast's fused score."""
        return preds[self.breast_of_row]

    def __getitem__(self, key):
        b = int(key[0]) if isinstance(key, tuple) else int(key)
        views, mask = [], np.zeros(self.max_views, bool)
        for v, row in enumerate(self.groups[b]):
            sub = (row, *key[1:-1], key[-1] * self.max_views + v) if isinstance(key, tuple) else row
            x, info = self.images[sub]
            views.append(x)
            mask[v] = bool(info.get("ok", True))
        views += [torch.zeros_like(views[0])] * (self.max_views - len(views))
        return torch.stack(views), {"cancer": torch.tensor(self.labels[b]), "index": torch.tensor(b),
                                    "view_mask": torch.from_numpy(mask), "ok": torch.tensor(bool(mask.any())),
                                    **self.extras.of(self.groups[b], self.max_views)}


class KeyedDraws:
    """A batch sampler that turns another's indices into :class:`MammoDataset` keys
    ``(index, epoch, rank, draw)``, where ``draw`` counts the samples of the epoch on this rank.

    The keys are made here, in the main process, so the augmentation of a draw depends on the seed,
    the epoch and its place in the epoch, never on which worker loads it.
    """

    def __init__(self, batches, rank: int = 0):
        self.batches, self.rank, self.epoch = batches, rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        inner = self.batches if hasattr(self.batches, "set_epoch") else getattr(self.batches, "sampler", None)
        if hasattr(inner, "set_epoch"):
            inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        draw = 0
        for batch in self.batches:
            yield [(int(i), self.epoch, self.rank, draw + j) for j, i in enumerate(batch)]
            draw += len(batch)


def train_batches(labels, batch_size: int, sampler: str = "balanced", pos_fraction: float = 0.25, seed: int = 0,
                  rank: int = 0, world_size: int = 1) -> KeyedDraws:
    """The training batch sampler: balanced batches or a shuffle (``random``), seeded per epoch and
    rank-aware under DDP, wrapped in :class:`KeyedDraws`. Training and the benchmarks both use it."""
    from torch.utils.data import BatchSampler, DistributedSampler

    from .sampling import BalancedBatchSampler

    if sampler == "balanced":
        batches = BalancedBatchSampler(labels, batch_size, pos_fraction, seed=seed, rank=rank, world_size=world_size)
    elif sampler == "random":
        # DistributedSampler serves one process too: its order is a function of (seed, epoch), so a resumed
        # run sees the epochs an uninterrupted one would have seen.
        order = DistributedSampler(range(len(labels)), world_size, rank, shuffle=True, seed=seed,
                                   drop_last=world_size > 1)
        batches = BatchSampler(order, batch_size, drop_last=len(labels) // world_size > batch_size)
    else:
        raise ValueError(f"sampler must be balanced or random, got {sampler!r}")
    return KeyedDraws(batches, rank)


def loader_start_method(workers: int) -> str | None:
    """How DataLoader workers start: None (the platform's default) except in a process started by "spawn",
    as a Dask worker is, whose loader workers would each import torch again (seconds, for every fold and
    trial a cluster runs): there they fork on Linux, as PyTorch's workers do in a plain process."""
    spawned = multiprocessing.get_start_method(allow_none=True) == "spawn"
    if workers > 0 and spawned and sys.platform.startswith("linux"):
        return "fork"
    return None


def create_loader(ds, batch_size: int, workers: int = 2, batch_sampler=None, sampler=None,
                  pin_memory: bool | None = None) -> DataLoader:
    """DataLoader with persistent workers and pinned memory on CUDA.

    Training passes a ``batch_sampler`` (:func:`train_batches`); otherwise samples are read in order
    (``sampler`` may pick a subset, e.g. one rank's shard)."""
    pin = torch.cuda.is_available() if pin_memory is None else pin_memory
    # A generator of its own: every new iterator draws a base seed from it, and drawing from torch's
    # global stream instead would shift dropout by a number that depends on the workers setting.
    common = dict(num_workers=workers, pin_memory=pin, persistent_workers=workers > 0,
                  prefetch_factor=4 if workers > 0 else None, generator=torch.Generator().manual_seed(0),
                  multiprocessing_context=loader_start_method(workers))
    if batch_sampler is not None:
        return DataLoader(ds, batch_sampler=batch_sampler, **common)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, sampler=sampler, **common)


def join_manifest_folds(manifest: pd.DataFrame, folds_csv) -> pd.DataFrame:
    """Manifest rows of the images listed in folds.csv, with their ``fold`` and folds.csv's label.

    The label comes from folds.csv, so a label control (shuffled labels) made in notebook 03 reaches
    training; images of folds.csv that failed preprocessing are dropped with a warning.
    """
    import logging

    from ..errors import UserError

    if not Path(folds_csv).exists():
        raise UserError(f"{folds_csv} not found: make folds first (notebook 03 or `python -m mammo_utils folds`)")
    folds = read_csv(folds_csv)
    if not {"image_id", "fold", "cancer"} <= set(folds):
        raise UserError(f"{folds_csv} lacks image_id, fold or cancer columns")
    if "sampled" not in folds:  # folds.csv of earlier versions: every listed image trains
        folds["sampled"] = True
    folds = folds[["image_id", "fold", "cancer", "sampled"]].astype({"sampled": bool})
    df = manifest.drop(columns=["fold", "cancer", "sampled"], errors="ignore").merge(folds, on="image_id", how="inner")
    # in folds.csv's order, not the manifest's: parallel preprocessing writes rows as files finish, and the
    # samplers pick rows by position, so another order would train another model from the same seed
    position = dict(zip(folds.image_id, range(len(folds))))
    df = df.iloc[np.argsort(df.image_id.map(position).to_numpy(), kind="stable")].reset_index(drop=True)
    df = with_prediction_id(df)
    if df.empty:
        raise UserError(f"no image of {folds_csv} is in the manifest: were they preprocessed?")
    missing = len(folds) - len(df)
    if missing:
        logging.getLogger(__name__).warning("%d image(s) of %s are not in the manifest (failed preprocessing?): "
                                            "left out", missing, folds_csv)
    return df


def n_folds(folds_csv) -> int:
    """How many folds a folds.csv has."""
    from ..errors import UserError

    if not Path(folds_csv).exists():
        raise UserError(f"{folds_csv} not found: make folds first (notebook 03 or `python -m mammo_utils folds`)")
    return int(pd.read_csv(folds_csv, usecols=["fold"]).fold.max()) + 1


def read_split(preprocessed: Path, folds_csv, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train rows, validation rows) for one fold.

    Training takes the other folds' images that the sampling strategy picked (``sampled``);
    validation takes every image of the fold, so it meets the prevalence of the data itself."""
    from ..errors import UserError
    from ..tables import read_manifest

    df = join_manifest_folds(read_manifest(preprocessed), folds_csv)
    holdout_csv = paths.holdout_csv(Path(folds_csv).parent)
    if holdout_csv.exists():  # the locked holdout beside folds.csv takes no part in training or validation
        leaked = set(df.patient_id) & set(read_csv(holdout_csv, usecols=["patient_id"]).patient_id)
        if leaked:
            raise UserError(f"{folds_csv} holds {len(leaked)} patient(s) of the locked holdout {holdout_csv} "
                            f"(e.g. {sorted(leaked)[:3]}): make the folds again (notebook 03)")
    if fold not in set(df.fold):
        raise UserError(f"fold {fold} is not in {folds_csv} (folds: {sorted(set(df.fold))})")
    return (df[(df.fold != fold) & df.sampled].reset_index(drop=True),
            df[df.fold == fold].reset_index(drop=True))


def split_line(train_df: pd.DataFrame, val_df: pd.DataFrame) -> str:
    return (f"train: {len(train_df)} images ({int(train_df.cancer.sum())} cancer); "
            f"validation: {len(val_df)} images ({int(val_df.cancer.sum())} cancer), "
            f"{val_df.prediction_id.nunique()} breasts")


def augmentation_preview(df: pd.DataFrame, n: int = 4, seed: int = 0, cfg: AugmentConfig | None = None):
    """Two augmented draws of the ``n`` first cancer images (then others): (images, titles) for a gallery."""
    rng = np.random.default_rng(seed)
    rows = df.sort_values("cancer", ascending=False, kind="stable").head(n)
    picks = list(rows.itertuples()) * 2
    images = [augment(load_png(r.abs_path), cfg or AugmentConfig(), rng) for r in picks]
    return images, [f"{r.prediction_id} {r.view} cancer={r.cancer} (augmented)" for r in picks]

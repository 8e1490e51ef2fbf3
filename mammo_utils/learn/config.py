"""Training configuration: about twenty-five literals, grouped, each with a comment saying why.

Saved as ``config.json`` in the run folder and inside every checkpoint. Kept in its own module so
that :mod:`.checkpoint` and :mod:`.train` both import it and neither imports the other.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import UserError

log = logging.getLogger(__name__)

GPU_MODEL = "efficientnet_b4"   # what the RSNA top solutions trained at 1024x512 and up
CPU_MODEL = "resnet10t"         # ~5 img/s at 256x128 on 2 cores: the demo trains in minutes

# Fields earlier versions had. A saved config that holds them still loads; they are ignored with a warning.
REMOVED_FIELDS = {"head", "in_chans", "drop_path_rate", "aux", "aux_weight", "freeze_backbone", "label_smoothing",
                  "channels_last", "compile", "max_nonfinite", "mlflow"}  # mlflow: the old flag; see tracking
# The two kinds of settings. Bookkeeping says where and how a run is recorded or paced; changing it never
# changes the model, so a rerun resumes the fold where it stopped. Every other field changes the model:
# a rerun with another value starts the fold afresh (its earlier outputs set aside), and folds that differ
# in one of them are different recipes, never averaged into one ensemble.
BOOKKEEPING = ("run_dir", "epochs", "workers", "max_steps_per_epoch", "tracking", "tracking_uri", "log_checkpoints",
               "resume")
NOT_RECIPE = BOOKKEEPING + ("fold", "folds")  # the fold differs by design; folds.csv counts by content (a copy moves it)

CHOICES = {"tracking": ("mlflow", "none"), "schedule": ("cosine", "constant"), "amp": ("auto", "bf16", "fp16", "none"),
           "loss": ("bce", "focal"),
           "sampler": ("balanced", "random"), "select_metric": ("pf1", "auc"), "aggregate": ("mean", "max"),
           "fusion": ("none", "mean", "attention")}


@dataclass
class AugmentConfig:
    """Train-time augmentation strengths; zeros disable a transform."""

    vflip: float = 0.5          # the chest wall stays on the left, so only vertical flips are anatomical
    hflip: float = 0.0
    rotate_deg: float = 10.0
    scale: float = 0.10
    shift: float = 0.05
    brightness: float = 0.10
    contrast: float = 0.15
    gamma: float = 0.20
    dropout_boxes: int = 2      # coarse dropout
    dropout_size: float = 0.10


@dataclass
class TrainConfig:
    """All knobs of one training run (one fold)."""

    # where
    run_dir: str = "runs/train"                          # checkpoints, metrics.csv, val_predictions.csv
    preprocessed: str = "data/synthetic/train_256x128"   # folder with manifest.csv (+ preprocess.json)
    folds: str = "runs/folds.csv"                        # from sampling.make_folds (notebook 03)
    fold: int = 0                                        # validation fold; the others train
    # model
    model: str | None = None           # any timm name; None: efficientnet_b4 on a GPU, resnet10t on a CPU
    pretrained: str | None = None      # local weights file (a missing one is an error); None: random init
    drop_rate: float = 0.3             # dropout before the classifier
    # optimization
    epochs: int = 8                    # passes over the training images (counted from 1 everywhere)
    batch_size: int = 16               # per process; the global batch is batch_size * accum_steps * world_size
    accum_steps: int = 1               # gradient accumulation: a bigger effective batch in the same memory
    lr: float = 1e-3                   # for the global batch (scale linearly when it grows)
    weight_decay: float = 1e-2         # AdamW; not applied to biases and norm weights
    schedule: str = "cosine"           # cosine: linear warmup then cosine to 0 | constant: warmup then flat
    warmup_epochs: float = 1.0         # linear warmup keeps AdamW's early steps from diverging
    clip_grad: float = 1.0             # max gradient norm after unscaling; 0 = off
    amp: str = "auto"                  # auto (CUDA: bf16 if supported else fp16; CPU: off) | bf16 | fp16 | none
    sync_bn: bool = False              # DDP on GPUs: BatchNorm statistics over the global batch (SyncBatchNorm)
    # loss and sampling
    loss: str = "bce"                  # bce | focal (down-weights easy negatives)
    focal_gamma: float = 2.0           # focal loss exponent
    pos_weight: str | float | None = "auto"  # auto: n_neg/n_pos with random sampling, 1 with balanced
    sampler: str = "balanced"          # balanced: pos_fraction positives per batch | random: plain shuffling
    pos_fraction: float = 0.25         # share of positives in a balanced batch
    augment: dict = field(default_factory=dict)  # AugmentConfig overrides, e.g. {"rotate_deg": 5}
    # beyond the pixels (see mammo_utils.learn.metadata)
    metadata: str = ""                 # test-time columns fused with the image features, e.g. "age,implant,view,machine_id,site_id"
    aux_targets: str = ""              # train-only columns with auxiliary heads (loss weight after ':'), e.g. "BIRADS:0.2,density"
    fusion: str = "none"               # none: one image at a time | mean | attention: a breast's views pooled (batch_size counts breasts)
    # model selection
    ema_decay: float = 0.0             # EMA of the weights (e.g. 0.999); validated and saved when > 0
    select_metric: str = "pf1"         # pf1 | auc: which validation metric picks best.pt
    aggregate: str = "mean"            # per-breast aggregation of image predictions: mean | max
    # bookkeeping
    max_steps_per_epoch: int | None = None  # cap for smoke tests
    workers: int = 2                   # DataLoader processes
    seed: int = 0                      # weights, sampling, augmentation and dropout: same seed, same run
    tracking: str = "mlflow"           # mlflow: params, per-epoch metrics and artefacts of every run | none
    tracking_uri: str | None = None    # None: MLFLOW_TRACKING_URI, else a local store beside the run folder
    log_checkpoints: bool = False      # also send best.pt to MLflow (large)
    resume: bool | str = "auto"        # auto: continue from last.pt made with the same settings, else start afresh | true | false

    def __post_init__(self):
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise UserError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "accum_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.resume not in (True, False, "auto"):
            raise UserError(f"resume must be true, false or auto, got {self.resume!r}")
        if not 0 < self.pos_fraction < 1:
            raise UserError(f"pos_fraction must be in (0, 1), got {self.pos_fraction}")
        if not 0 <= self.ema_decay < 1:
            raise UserError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserError(f"lr must be a finite number > 0, got {self.lr}")
        from .metadata import check_metadata, parse_aux

        check_metadata(self.metadata)
        parse_aux(self.aux_targets)
        unknown = set(self.augment) - set(AugmentConfig.__dataclass_fields__)
        if unknown:
            raise UserError(f"augment has unknown key(s) {sorted(unknown)}; known: {sorted(AugmentConfig.__dataclass_fields__)}")

    def replace(self, **changes) -> "TrainConfig":
        """A copy with ``changes``; values are checked against each field's type (``epochs="ten"`` fails)."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        unknown = set(changes) - set(fields) - REMOVED_FIELDS
        if unknown:
            raise UserError(f"unknown TrainConfig field(s) {sorted(unknown)}; known: {sorted(fields)}")
        removed = set(changes) & REMOVED_FIELDS
        if removed:
            log.warning("ignoring TrainConfig field(s) no longer used: %s", sorted(removed))
        hints = typing.get_type_hints(TrainConfig)
        clean = {k: coerce(k, v, hints[k]) for k, v in changes.items() if k in fields}
        return dataclasses.replace(self, **clean)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls().replace(**d)

    @classmethod
    def from_json_file(cls, path) -> "TrainConfig":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"config file {path} not found") from None
        except json.JSONDecodeError as exc:
            raise UserError(f"config file {path} is not valid JSON ({exc})") from None
        if not isinstance(d, dict):
            raise UserError(f"config file {path} must hold a JSON object of TrainConfig fields")
        return cls.from_dict(d)


def field_help() -> list[tuple[str, object, str]]:
    """(name, default, meaning) of every TrainConfig field, the meaning taken from the comment beside
    the field in this file: one source for the code, ``train --help`` and the docs."""
    import inspect
    import re

    comments = {}
    for line in inspect.getsource(TrainConfig).splitlines():
        m = re.match(r"\s{4}(\w+): [^=]+=.*?#\s*(.+)$", line)
        if m:
            comments[m.group(1)] = m.group(2).strip()
    defaults = asdict(TrainConfig())
    return [(f.name, defaults[f.name], comments.get(f.name, "")) for f in dataclasses.fields(TrainConfig)]


def setting_kind(name: str) -> str:
    """``"bookkeeping"`` (a rerun resumes) or ``"model"`` (a rerun starts afresh) for a TrainConfig field."""
    return "bookkeeping" if name in BOOKKEEPING else "model"


def portable(config: dict) -> dict:
    """``config`` with a preprocessed folder inside its run folder (``<run>/preprocessed/...`` beside
    ``<run>/train/fold<k>``) written relative to that run folder: a copied run folder keeps its recipe."""
    pre, fold_dir = config.get("preprocessed"), config.get("run_dir")
    if not pre or not fold_dir:
        return config
    try:
        relative = Path(pre).resolve().relative_to(Path(fold_dir).resolve().parent.parent)
    except ValueError:
        return config  # a folder elsewhere (a sweep's shared preprocessing): compared as it is
    return {**config, "preprocessed": f"<run>/{relative.as_posix()}"}


def recipe(config: dict) -> dict:
    """The model-changing settings of a saved config (config.json or a checkpoint's ``config``): what two
    folds of one run must share to be averaged into one ensemble."""
    config = portable(config)
    out = {k: v for k, v in config.items() if k in TrainConfig.__dataclass_fields__ and k not in NOT_RECIPE}
    if config.get("folds_fingerprint"):
        out["folds_fingerprint"] = config["folds_fingerprint"]
    return out


def coerce(name: str, value, hint):
    """``value`` as the type ``hint`` allows (int, float, str, bool, dict, Optional...), or a UserError."""
    args = typing.get_args(hint) or (hint,)
    if value is None:
        if type(None) in args:
            return None
        raise UserError(f"{name} cannot be None")
    for t in (a for a in args if a is not type(None)):
        if t is bool and isinstance(value, bool):
            return value
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is str and isinstance(value, str):
            return value
        if t is dict and isinstance(value, dict):
            return value
    allowed = " or ".join(getattr(a, "__name__", str(a)) for a in args)
    raise UserError(f"{name} must be {allowed}, got {value!r}")


def resolve_model(model: str | None, cuda: bool, verbose: bool = True) -> str:
    """``None`` means the default for the device: EfficientNet-B4 on a GPU, a small net on a CPU."""
    if model:
        return model
    chosen = GPU_MODEL if cuda else CPU_MODEL
    if verbose:
        print(f"model=None: training {chosen} ({'a GPU is present' if cuda else 'no GPU: a small net keeps CPU training to minutes'})")
    return chosen

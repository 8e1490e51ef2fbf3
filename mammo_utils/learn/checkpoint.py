"""Checkpoint files: atomic save, load with a clear error, and the model they hold.

A checkpoint is a plain dict of tensors and literals (``weights_only`` loadable): ``config`` (a
TrainConfig dict), ``model_args``, ``preprocess`` (the PreprocessConfig dict the images were made
with), ``model`` (EMA weights when the run used EMA), ``threshold``, ``aggregate``,
``data_breast_prevalence`` (the whole table's, before undersampling), ``folds_fingerprint``, ``folder``
(where it was trained, so a copy is told apart), ``world_size``, ``provenance``; ``last.pt`` adds optimizer, scheduler,
scaler and EMA state for resuming.
"""
from __future__ import annotations

import os
import pickle
import uuid
import zipfile
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import CheckpointError
from .models import model_from_args


def save_checkpoint(path, **payload) -> None:
    """Write via a temp file and rename: a killed run never leaves a torn checkpoint."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # never shared by two writers
    try:
        torch.save(payload, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path, map_location="cpu") -> dict:
    """The checkpoint dict; a missing, empty, truncated or foreign file raises CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        raise CheckpointError(f"checkpoint {path} is not a mammo-workbook checkpoint (no model/model_args)")
    return ckpt


def epochs_done(ckpt: dict) -> int:
    """Epochs a checkpoint has finished (checkpoints of earlier versions counted from 0)."""
    return ckpt["epoch"] if "epoch_base" in ckpt else ckpt["epoch"] + 1


def best_epoch(ckpt: dict) -> int:
    """The best epoch a checkpoint records, counted from 1 (earlier versions counted from 0)."""
    return int(ckpt["best_epoch"]) + (0 if "epoch_base" in ckpt else 1)


def unwrap(model: nn.Module) -> nn.Module:
    """The module whose state_dict has clean keys (no ``module.`` from DDP, no ``_orig_mod.`` from compile)."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def load_model(path, device="cpu") -> tuple[nn.Module, dict]:
    """Model with the weights of a checkpoint (EMA weights when the run used EMA) and the checkpoint."""
    ckpt = load_checkpoint(path)
    model = model_from_args(ckpt["model_args"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path}: weights do not fit {ckpt['model_args']} ({str(exc).splitlines()[0]})") from None
    return model.to(device).eval(), ckpt

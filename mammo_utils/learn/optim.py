"""The loss, the optimizer and the learning-rate schedule of a training run (each testable on its own)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import TrainConfig


def compute_loss(logit: torch.Tensor, y: torch.Tensor, loss: str = "bce", pos_weight: float = 1.0,
                 focal_gamma: float = 2.0) -> torch.Tensor:
    """BCE with ``pos_weight``, or focal loss (Lin et al. 2017): BCE scaled by ``(1 - p_t) ** gamma``."""
    logit, y = logit.float(), y.float()
    pw = torch.tensor(pos_weight, device=logit.device)
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(logit, y, pos_weight=pw)
    if loss == "focal":
        bce = F.binary_cross_entropy_with_logits(logit, y, reduction="none", pos_weight=pw)
        p = torch.sigmoid(logit)
        p_t = p * y + (1 - p) * (1 - y)
        return ((1 - p_t) ** focal_gamma * bce).mean()
    raise ValueError(f"loss must be bce or focal, got {loss!r}")


def lr_lambda(schedule: str, total_steps: int, warmup_steps: int):
    """Multiplier of the base LR at an optimizer step: linear warmup, then cosine to 0 or constant."""
    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1 + math.cos(math.pi * progress))
    return f


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm weights (1-D tensors)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


def build_scheduler(opt, cfg: TrainConfig, steps_per_epoch: int):
    total = max(1, cfg.epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.schedule, total, int(cfg.warmup_epochs * steps_per_epoch)))


def batches_per_epoch(n_loader_batches: int, cfg: TrainConfig) -> int:
    """Loader batches one epoch consumes (capped by ``max_steps_per_epoch`` optimizer steps)."""
    if cfg.max_steps_per_epoch is None:
        return n_loader_batches
    return min(n_loader_batches, cfg.max_steps_per_epoch * cfg.accum_steps)

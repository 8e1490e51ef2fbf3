"""What training and inference share: mixed precision and the one batched predict loop (with TTA).

``inference`` imports this module and never ``train``.
"""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from ..errors import UserError


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a config value, or None for full precision.

    ``auto``: bf16 on a GPU that has it (Ampere and newer), fp16 on older GPUs (Kaggle's P100 and
    T4), nothing on a CPU. ``fp16`` on a CPU is allowed: slow, but it runs the GradScaler path
    that Kaggle users take, so it can be tested without a GPU.
    """
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "none":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    raise UserError(f"amp must be auto, bf16, fp16 or none; got {amp!r}")


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def create_grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A GradScaler for ``device.type``, enabled for fp16 only (bf16 has fp32's exponent range)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def tta_views(x: torch.Tensor, tta: bool) -> list[torch.Tensor]:
    """The input and, with ``tta``, its vertical flip (top <-> bottom: the chest wall stays on the left).
    Rows are the second-to-last axis of an image batch and of a batch of breasts alike."""
    return [x, torch.flip(x, dims=[-2])] if tta else [x]


def model_inputs(info: dict, device) -> dict:
    """What a batch gives the model beside the pixels: raw metadata (the model encodes it) and the
    mask of a breast's views."""
    out = {}
    if "meta" in info:
        out["meta"] = info["meta"]
    if "view_mask" in info:
        out["view_mask"] = info["view_mask"].to(device, non_blocking=True)
    return out


@torch.inference_mode()
def predict_batch(models, x: torch.Tensor, amp_dtype=None, tta: bool = False, inputs: dict | None = None) -> torch.Tensor:
    """Cancer probability per sample: the mean of sigmoid outputs over models and TTA views."""
    views = tta_views(x, tta)
    total = torch.zeros(x.shape[0], device=x.device)
    for m in models:
        for v in views:
            with autocast(x.device, amp_dtype):
                total += torch.sigmoid(m(v, **(inputs or {}))["cancer"].float())
    return total / (len(models) * len(views))


def predict_loader(models, loader, n: int, device, amp_dtype=None, tta: bool = False,
                   channels_last: bool = False, progress: bool = False, desc: str = "predict") -> np.ndarray:
    """Probabilities for ``n`` samples from batches ``(x, info)``; ``info["index"]`` places each sample,
    and ``info["ok"]`` (optional) marks samples that failed to load: they stay NaN."""
    from ..progress import bar as progress_bar

    for m in models:
        m.eval()
    preds = np.full(n, np.nan, dtype=np.float64)
    bar = progress_bar(total=len(loader), desc=desc, unit="batch", leave=False, disable=not progress)
    for x, info in loader:  # the bar is updated by hand: wrapping the loader would iterate it twice in some front-ends
        x = x.to(device, non_blocking=True)
        if channels_last and device.type == "cuda" and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        p = predict_batch(models, x, amp_dtype, tta, model_inputs(info, device)).cpu().numpy()
        idx = info["index"].numpy()
        ok = info["ok"].numpy().astype(bool) if "ok" in info else np.ones(len(idx), bool)
        preds[idx[ok]] = p[ok]
        bar.update()
    bar.close()
    return preds

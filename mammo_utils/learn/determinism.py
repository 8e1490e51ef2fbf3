"""Same seed, same run: the seed of each epoch, deterministic kernels, and what provenance says about them."""
from __future__ import annotations

from contextlib import contextmanager

import torch


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """The seed of torch's global stream (dropout) for one epoch of one rank: a function of the epoch, not
    of how many epochs this process ran, so a resumed fold reproduces the uninterrupted one."""
    return (seed * 1000 + rank) * 10007 + epoch


def _cuda(device) -> bool:
    return getattr(device, "type", str(device)) == "cuda"


@contextmanager
def deterministic(device="cpu"):
    """Deterministic kernels while training on a CPU (same seed, same run), restored afterwards. On CUDA
    the fast kernels stay (cuDNN's deterministic choices and cuBLAS's fixed workspace cost speed, and some
    kernels have no deterministic version at all): :func:`determinism` records it in the provenance."""
    if _cuda(device):
        yield
        return
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def determinism(device) -> dict:
    """What the run's provenance says about repeating it with the same seed."""
    if _cuda(device):
        return {"deterministic": False,
                "determinism_note": "CUDA: the same seed draws the same batches, augmentations and dropout, but "
                                    "GPU kernels with atomic adds (cuDNN backward passes, interpolation, scatter) "
                                    "are not deterministic: a rerun may differ in the last digits"}
    return {"deterministic": True, "determinism_note": "CPU: deterministic kernels; same seed, same run"}

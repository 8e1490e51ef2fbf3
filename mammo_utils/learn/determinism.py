"""Same seed, same run: the seed of each epoch, deterministic kernels, and what provenance says about them."""
from __future__ import annotations

from contextlib import contextmanager

import torch


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """The seed of torch's global stream (dropout) for one epoch of one rank: a function of the epoch, not
    of how many epochs this process ran, so a resumed fold reproduces the uninterrupted one."""
    return (seed * 1000 + rank) * 10007 + epoch


@contextmanager
def deterministic():
    """Deterministic kernels while training (same seed, same run on a CPU); on CUDA the kernels without a
    deterministic version warn instead of failing (:func:`determinism` records that). Restored afterwards."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def determinism(device) -> dict:
    """What the run's provenance says about repeating it with the same seed."""
    if getattr(device, "type", str(device)) == "cuda":
        return {"deterministic": False,
                "determinism_note": "CUDA: deterministic algorithms requested (warn_only), but some GPU kernels "
                                    "(atomic adds in backward passes, e.g. interpolation and scatter) have no "
                                    "deterministic version: the same seed may differ in the last digits"}
    return {"deterministic": True, "determinism_note": "CPU: deterministic kernels; same seed, same run"}

"""torch.distributed for ``torchrun``: one process per GPU (or per CPU slot with gloo).

``torchrun --standalone --nproc-per-node N -m mammo_utils train --config cfg.json`` sets RANK,
WORLD_SIZE and LOCAL_RANK; without them everything here is a no-op and training is single-process.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from .checkpoint import unwrap

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed() -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPUs); pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
        device = torch.device("cuda", info.local_rank)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return info, device


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj``, in rank order (just ``[obj]`` in a single process)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_across_ranks(value: float, info: DistInfo) -> float:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def any_across_ranks(flag: bool, info: DistInfo) -> bool:
    """Whether ``flag`` is true on any rank: every rank gets the same answer (one all-reduce of a max)."""
    if not info.enabled:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, so that all ranks validate the
    weights rank 0 saves: DDP syncs buffers at the start of each forward, so the last one leaves them apart."""
    if not info.enabled:
        return
    for b in model.buffers():
        dist.broadcast(b.data, src=0)


def broadcast_module(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's parameters and buffers to every rank (e.g. an EMA copy each rank updated itself)."""
    if not info.enabled:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def ranks_agree(model: nn.Module, info: DistInfo) -> bool:
    """Whether every rank holds the same weights and buffers (always true in one process). Logged per
    epoch in metrics.csv: ranks that drift apart validate and save different models."""
    if not info.enabled:
        return True
    import hashlib

    digest = hashlib.sha1()
    for t in unwrap(model).state_dict().values():
        digest.update(t.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    digests = all_gather_objects(digest.hexdigest(), info)
    if len(set(digests)) > 1:
        log.error("ranks disagree on the model weights: %s", digests)
    return len(set(digests)) == 1

"""Run training in this process, or under ``torchrun`` with one process per GPU (DDP).

Notebook 04 calls :func:`train_fold`; with ``gpus > 1`` it writes the config next to the run and
starts ``torchrun --standalone --nproc-per-node gpus -m mammo_utils train --config ...``, streaming
its per-epoch lines, then returns the same result dict a single-process run returns.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from . import paths
from .config import TrainConfig
from .errors import UserError


def torchrun_command(config_path, nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "mammo_utils", "train", "--config", str(config_path)]


def train_fold(cfg: TrainConfig, gpus: int = 1, progress: bool = True) -> dict:
    """Train one fold here (``gpus`` <= 1) or under torchrun; returns the result dict of :func:`train.train`."""
    if gpus <= 1:
        from .train import train

        return train(cfg, progress=progress)
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() < gpus:
        raise UserError(f"gpus={gpus} but this machine has {torch.cuda.device_count()} GPU(s)")
    if not torch.cuda.is_available():
        print(f"no GPU: running {gpus} CPU processes with the gloo backend (slow; for testing the DDP path)")
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    config_path = run / "torchrun_config.json"
    config_path.write_text(json.dumps(cfg.to_dict(), indent=2))
    proc = subprocess.run(torchrun_command(config_path, gpus), capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("epoch ") or line.startswith("model="):
            print(line)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return result_from_run(run)


def result_from_run(run) -> dict:
    """The result dict of a finished run, read back from its best checkpoint."""
    from .checkpoint import load_checkpoint

    ckpt = load_checkpoint(Path(run) / paths.BEST)
    return {"run_dir": str(run), "model": ckpt["model_args"]["name"], "best_epoch": ckpt["best_epoch"],
            "best_metric": ckpt["best_metric"], "select_metric": ckpt["config"]["select_metric"],
            "threshold": ckpt["threshold"], **{f"val_{k}": v for k, v in ckpt["val_metrics"].items()},
            "world_size": ckpt.get("world_size", 1)}

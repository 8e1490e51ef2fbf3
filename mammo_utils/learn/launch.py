"""Run training in this process, or under ``torchrun`` with one process per GPU (DDP).

Notebook 04 calls :func:`train_folds`, which calls :func:`train_fold` per fold (or, given a Dask
scheduler, runs the folds as parallel tasks); with ``gpus > 1`` it writes the config next to the run and
starts ``torchrun --standalone --nproc-per-node gpus -m mammo_utils train --config ...``, streaming
its per-epoch lines, then returns the same result dict a single-process run returns.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .. import paths
from ..errors import UserError
from .config import TrainConfig


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
    config_path = paths.torchrun_config(run)
    config_path.write_text(json.dumps(cfg.to_dict(), indent=2))
    returncode, stderr_tail = stream_epoch_lines(torchrun_command(config_path, gpus))
    if returncode != 0:
        raise RuntimeError(f"torchrun failed (exit {returncode}):\n{stderr_tail}")
    return result_from_run(run)


def train_folds(cfg: TrainConfig, run, folds, gpus: int = 1, progress: bool = True, scheduler: str | None = None
                ) -> list[dict]:
    """Train ``folds`` of a run one after another (each on every GPU under DDP), each in
    ``<run>/train/fold<k>`` and resumable on its own (``resume="auto"``: a finished fold is not trained
    again). Prints the expected time of the rest once the first fold has taken its time.

    With a ``scheduler`` (``local:N``, ``tcp://HOST:PORT``, ``slurm:``, ``pbs:``) the folds are parallel
    tasks on a Dask cluster instead, one per GPU where there are GPUs: see :func:`train_folds_on`."""
    import time

    if scheduler:
        return train_folds_on(scheduler, cfg, run, folds, gpus)
    results = []
    print(f"training {len(folds)} fold(s) {folds} one after another, {cfg.epochs} epochs each", flush=True)
    for i, k in enumerate(folds):
        t0 = time.perf_counter()
        results.append(train_fold(cfg.replace(fold=k, run_dir=str(paths.train_dir(run, k))), gpus, progress))
        left = len(folds) - i - 1
        if left:
            minutes = (time.perf_counter() - t0) / 60
            print(f"fold {k} took {minutes:.1f} min: about {minutes * left:.1f} min more for folds {folds[i + 1:]}",
                  flush=True)
    return results


def fold_task(cfg: TrainConfig, gpus: int = 1) -> dict:
    """One fold as a cluster task, under its folder's lock. A rerun of the task (its worker died) takes
    the lock the dead process released and resumes from the fold's ``last.pt``; a finished fold returns
    its result without training."""
    from ..locks import folder_lock

    with folder_lock(cfg.run_dir, f"training fold {cfg.fold}"):
        return train_fold(cfg, gpus, progress=False)


def train_folds_on(scheduler: str, cfg: TrainConfig, run, folds, gpus: int = 1) -> list[dict]:
    """Train ``folds`` as parallel tasks on a Dask cluster, each in its own ``<run>/train/fold<k>``;
    return when every fold is done. A failed fold is named (the finished ones are kept: rerun to train
    only what is missing)."""
    from .. import parallel, tracking

    parallel.check_scheduler(scheduler)
    if cfg.resume is False:
        raise UserError("resume=False with a scheduler: a fold rerun after a lost worker would start over; "
                        "use resume='auto'")
    env = {k: os.environ[k] for k in (tracking.RUN_ID_ENV, "MLFLOW_TRACKING_URI") if k in os.environ}
    tasks = [parallel.Task(f"fold{k}", fold_task, (cfg.replace(fold=k, run_dir=str(paths.train_dir(run, k))), gpus),
                           env=env) for k in folds]
    print(f"training {len(folds)} fold(s) {folds} as parallel tasks on {scheduler}, {cfg.epochs} epochs each",
          flush=True)
    with parallel.training_client(scheduler) as client:
        results, failures = parallel.run_tasks(client, tasks, "folds", gpus_per_task=max(1, gpus))
    if failures:
        raise UserError(f"{len(failures)} of {len(folds)} fold(s) failed (the others are finished and kept; rerun "
                        f"to train only the missing ones):\n{parallel.failure_lines(failures)}")
    for k in folds:
        r = results[f"fold{k}"]
        print(f"fold {k}: best epoch {r['best_epoch']}, {r['select_metric']} {r['best_metric']:.3f}", flush=True)
    return [results[f"fold{k}"] for k in folds]


def stream_epoch_lines(command: list[str]) -> tuple[int, str]:
    """Run ``command``, printing its per-epoch lines the moment they arrive; returns (exit code, the
    last 4000 characters of its stderr). stderr goes to a temporary file, so a chatty child never
    blocks on a full pipe while we read its stdout."""
    import tempfile

    with tempfile.TemporaryFile("w+") as err:
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1) as proc:
            for line in proc.stdout:
                if line.startswith(("epoch ", "model=")):
                    print(line.rstrip("\n"), flush=True)
        err.seek(0)
        return proc.returncode, err.read()[-4000:]


def result_from_run(run) -> dict:
    """The result dict of a finished run, read back from its best checkpoint."""
    from .checkpoint import load_checkpoint

    ckpt = load_checkpoint(Path(run) / paths.BEST)
    return {"run_dir": str(run), "model": ckpt["model_args"]["name"], "best_epoch": ckpt["best_epoch"],
            "best_metric": ckpt["best_metric"], "select_metric": ckpt["config"]["select_metric"],
            "threshold": ckpt["threshold"], **{f"val_{k}": v for k, v in ckpt["val_metrics"].items()},
            "world_size": ckpt.get("world_size", 1)}

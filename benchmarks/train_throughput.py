"""Training throughput: the full loop (PNG loading, augmentation, sampler, optimizer) against a bare
forward/backward/step loop on random tensors with the same model, batch and precision, in one run.

    .venv/bin/python benchmarks/train_throughput.py                       # CPU: resnet10t 256x128
    .venv/bin/python benchmarks/train_throughput.py --model efficientnet_b4 --size 1024x512 --amp fp16

Warm-up steps are excluded. The goal is full/bare >= 0.9 (data loading hidden behind compute). Then
the cost of MLflow tracking: the same short training with tracking on and off, in the same run.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from mammo_utils.learn import optim
from mammo_utils.learn import train as T
from mammo_utils.learn.config import TrainConfig
from mammo_utils.learn.data import (
    MammoDataset,
    create_loader,
    read_split,
    train_batches,
)
from mammo_utils.learn.engine import autocast, create_grad_scaler, resolve_amp
from mammo_utils.learn.models import build_model
from mammo_utils.learn.sampling import patient_folds
from mammo_utils.paths import parse_size
from mammo_utils.prepare.preprocess import PreprocessConfig
from mammo_utils.prepare.runner import run_preprocess

DATA = Path(__file__).resolve().parent / "_data"


def prepared(size) -> tuple[Path, Path]:
    import pandas as pd

    from mammo_utils.synthetic import write_dataset

    data = DATA / "synthetic"
    if not (data / "train.csv").exists():
        write_dataset(data, patients=120, seed=0, progress=False)
    out = DATA / f"train_{size[0]}x{size[1]}"
    run_preprocess(data, "train", out, PreprocessConfig(size=size), jobs=2, progress=False)
    folds = DATA / "folds.csv"
    patient_folds(pd.read_csv(data / "train.csv"), n_splits=5).to_csv(folds, index=False)
    return out, folds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet10t")
    ap.add_argument("--size", default="256x128")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--amp", default="auto")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--tracking-only", action="store_true", help="only the cost of MLflow tracking")
    args = ap.parse_args()
    if args.tracking_only:
        tracking_cost(*prepared(parse_size(args.size)), args)
        return
    size = parse_size(args.size)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp_dtype = resolve_amp(args.amp, device)
    cfg = TrainConfig(model=args.model, batch_size=args.batch_size, amp=args.amp, workers=args.workers)
    pre, folds = prepared(size)
    train_df, _ = read_split(pre, folds, 0)
    model = build_model(args.model).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = optim.build_optimizer(model, cfg)
    scaler = create_grad_scaler(device, amp_dtype)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    # bare loop: random tensors already on the device
    x = torch.rand(args.batch_size, 1, *size, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.rand(args.batch_size, device=device) > 0.7).float()
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            sync()
            t0 = time.perf_counter()
        with autocast(device, amp_dtype):
            out = model(x)
        scaler.scale(optim.compute_loss(out["cancer"], y)).backward()
        T.optimizer_step(model, opt, scaler, 1.0, T.StepState())
    sync()
    bare = args.steps * args.batch_size / (time.perf_counter() - t0)

    # full loop: the real train_one_epoch over PNGs with augmentation and the balanced sampler
    ds = MammoDataset(train_df, train=True)
    sampler = train_batches(ds.labels, args.batch_size, "balanced", 0.25, seed=0)
    loader = create_loader(ds, args.batch_size, args.workers, batch_sampler=sampler)
    warm = cfg.replace(max_steps_per_epoch=args.warmup)
    T.train_one_epoch(model, loader, opt, sched, scaler, warm, device, amp_dtype, 1.0, T.StepState(), progress=False)
    sync()
    timed = cfg.replace(max_steps_per_epoch=args.steps)
    t0 = time.perf_counter()
    r = T.train_one_epoch(model, loader, opt, sched, scaler, timed, device, amp_dtype, 1.0, T.StepState(), progress=False)
    sync()
    full = r["images"] / (time.perf_counter() - t0)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device {name}; model {args.model}; input {size[0]}x{size[1]}; batch {args.batch_size}; "
          f"autocast {amp_dtype}; workers {args.workers}")
    print(f"bare forward/backward: {bare:.1f} img/s")
    print(f"full training loop:    {full:.1f} img/s")
    print(f"ratio full/bare = {full / bare:.2f}")
    tracking_cost(pre, folds, args)


def tracking_cost(pre: Path, folds: Path, args, epochs: int = 3, repeats: int = 2) -> None:
    """The same short training with MLflow tracking on (a local store, set up beforehand as a runs
    folder's store is after its first run) and off, interleaved; the cost per epoch as a share of an epoch."""
    import tempfile

    from mammo_utils import tracking

    spent = [0.0]  # seconds inside the tracker's calls (timed directly: the wall-clock difference is in the noise)

    def timed(fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - t0
        return wrapper

    for name in ("params", "metrics", "artifact", "tags", "end"):
        setattr(tracking.MlflowTracker, name, timed(getattr(tracking.MlflowTracker, name)))
    tracking.start = timed(tracking.start)  # opening the run (train() looks it up here)
    with tempfile.TemporaryDirectory() as tmp:
        uri = tracking.local_store(tmp)
        tracking.start("mlflow", tmp, "warm-up", uri).end()
        spent[0] = 0.0
        seconds = {"none": [], "mlflow": []}
        for r in range(repeats):
            for mode in ("none", "mlflow"):
                cfg = TrainConfig(run_dir=f"{tmp}/{mode}{r}", preprocessed=str(pre), folds=str(folds), model=args.model,
                                  batch_size=args.batch_size, amp=args.amp, workers=args.workers, epochs=epochs,
                                  max_steps_per_epoch=args.steps, tracking=mode, tracking_uri=uri)
                t0 = time.perf_counter()
                T.train(cfg, progress=False)
                seconds[mode].append((time.perf_counter() - t0) / epochs)
    off, on = min(seconds["none"]), min(seconds["mlflow"])
    per_epoch = spent[0] / (repeats * epochs)
    print(f"tracking: {per_epoch * 1000:.0f} ms per epoch inside MLflow calls (opening the run, parameters, "
          f"per-epoch metrics, artefacts) = {100 * per_epoch / off:.2f} % of a {off:.1f} s epoch (goal < 2 %); wall "
          f"clock {off:.2f} s per epoch off, {on:.2f} s on (best of {repeats} interleaved runs of {epochs} epochs, "
          f"{args.steps} steps each: the difference is within this machine's noise)")


if __name__ == "__main__":
    main()

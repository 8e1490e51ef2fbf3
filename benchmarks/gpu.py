"""EfficientNet-B4 at 1024x512 on a GPU: training and inference images/s under fp16 (+ GradScaler,
channels_last) and bf16, and whether the CPU loader (PNG decode + augmentation) can keep up.

    .venv/bin/python benchmarks/gpu.py [--batch 8] [--steps 20] [--workers N]

Where no CUDA device exists it says so and exits 0. Ratios are against fp16 measured in the same run.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def bench_model(dtype, batch: int, steps: int, size=(1024, 512)) -> tuple[float, float]:
    from mammo_utils.learn.engine import create_grad_scaler
    from mammo_utils.learn.models import build_model
    from mammo_utils.learn.train import StepState, optimizer_step
    from mammo_utils.learn.optim import compute_loss

    dev = torch.device("cuda")
    model = build_model("efficientnet_b4").to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = create_grad_scaler(dev, dtype)
    x = torch.rand(batch, 1, *size, device=dev).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, device=dev) > 0.5).float()

    def train_step():
        with torch.autocast("cuda", dtype=dtype):
            out = model(x)
        scaler.scale(compute_loss(out["cancer"], y)).backward()
        optimizer_step(model, opt, scaler, 1.0, StepState())

    model.train()
    for _ in range(3):
        train_step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step()
    torch.cuda.synchronize()
    train_ips = steps * batch / (time.perf_counter() - t0)
    model.eval()
    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype):
        for _ in range(3):
            model(x)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            model(x)
        torch.cuda.synchronize()
    return train_ips, steps * batch / (time.perf_counter() - t0)


def bench_loader(workers: int, n: int = 96, size=(1024, 512)) -> float:
    """Images/s of the training DataLoader (PNG decode + augmentation) on ``workers`` processes."""
    import pandas as pd

    from mammo_utils.learn.data import MammoDataset, create_loader, train_batches
    from mammo_utils.prepare.png import to_uint, write_png_atomic

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        paths = []
        for i in range(16):
            p = Path(tmp) / f"{i}.png"
            write_png_atomic(p, to_uint(rng.random(size, dtype=np.float32)))
            paths.append(str(p))
        df = pd.DataFrame({"abs_path": (paths * (n // 16 + 1))[:n], "cancer": 0})
        ds = MammoDataset(df, train=True)
        loader = create_loader(ds, 8, workers, batch_sampler=train_batches(ds.labels, 8, "random"), pin_memory=False)
        it = iter(loader)
        next(it)
        t0 = time.perf_counter()
        seen = sum(x.shape[0] for x, _ in it)
        return seen / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: the GPU benchmark needs one (run it on Kaggle or a GPU machine); nothing measured")
        return 0
    name = torch.cuda.get_device_name()
    print(f"device: {name}; torch {torch.__version__}; EfficientNet-B4 at 1024x512, batch {args.batch}, channels_last")
    rows = {"fp16": bench_model(torch.float16, args.batch, args.steps)}
    if torch.cuda.is_bf16_supported():
        rows["bf16"] = bench_model(torch.bfloat16, args.batch, args.steps)
    base = rows["fp16"]
    for k, (tr, inf) in rows.items():
        print(f"  {k}: train {tr:.1f} img/s (x{tr / base[0]:.2f} of fp16) | inference {inf:.1f} img/s "
              f"(x{inf / base[1]:.2f} of fp16)")
    for w in sorted({2, args.workers}):
        ld = bench_loader(w)
        print(f"  loader on {w} CPU processes: {ld:.1f} img/s = x{ld / base[0]:.2f} of fp16 training "
              f"({'keeps up' if ld >= base[0] else 'the GPU waits for data'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

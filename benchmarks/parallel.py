"""Folds in parallel on a 2-worker LocalCluster against the same folds one after another, in one run.

Both train the same 2 folds of the same recipe from scratch (resnet10t, CPU, 2 epochs); the parallel
time includes starting the cluster and its workers (what a user waits for). A warm-up fold runs first,
so imports and the first model build are paid before either is timed. Prints device, dtype, images per
second and the ratio sequential / parallel (2.0 would be perfect on 2 workers).

    .venv/bin/python benchmarks/parallel.py [--patients 40] [--size 128x64] [--steps 8]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mammo_utils import paths  # noqa: E402
from mammo_utils.learn.config import TrainConfig  # noqa: E402
from mammo_utils.learn.launch import train_folds  # noqa: E402
from mammo_utils.learn.sampling import patient_folds  # noqa: E402
from mammo_utils.prepare.preprocess import PreprocessConfig  # noqa: E402
from mammo_utils.prepare.runner import run_preprocess  # noqa: E402
from mammo_utils.synthetic import write_dataset  # noqa: E402


def images_trained(run, folds) -> int:
    return int(sum(pd.read_csv(paths.train_dir(run, k) / paths.METRICS).images.sum() for k in folds))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=40)
    ap.add_argument("--size", default="128x64")
    ap.add_argument("--steps", type=int, default=8, help="training steps per epoch")
    ap.add_argument("--epochs", type=int, default=2)
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-parallel-"))
    write_dataset(root / "data", patients=a.patients, seed=0, size=(384, 320), test_patients=2, jobs=2, progress=False)
    run_preprocess(root / "data", "train", root / "png", PreprocessConfig(size=paths.parse_size(a.size)), jobs=2,
                   progress=False)
    patient_folds(pd.read_csv(root / "data" / "train.csv"), n_splits=2, seed=0).to_csv(root / "folds.csv", index=False)
    cfg = TrainConfig(preprocessed=str(root / "png"), folds=str(root / "folds.csv"), model="resnet10t", epochs=a.epochs,
                      batch_size=8, workers=0, max_steps_per_epoch=a.steps, tracking="none", amp="none")
    train_folds(cfg.replace(epochs=1, max_steps_per_epoch=2), root / "warmup", [0], progress=False)

    t0 = time.perf_counter()
    train_folds(cfg, root / "sequential", [0, 1], progress=False)
    seq = time.perf_counter() - t0
    t0 = time.perf_counter()
    train_folds(cfg, root / "parallel", [0, 1], scheduler="local:2")
    par = time.perf_counter() - t0
    n_seq, n_par = images_trained(root / "sequential", [0, 1]), images_trained(root / "parallel", [0, 1])
    print(f"device cpu, dtype float32, resnet10t {a.size}, 2 folds x {a.epochs} epochs x {a.steps} steps of 8, "
          f"workers=0, {len(__import__('os').sched_getaffinity(0))} CPUs")
    print(f"sequential: {seq:.1f} s ({n_seq / seq:.1f} img/s trained)")
    print(f"local:2:    {par:.1f} s ({n_par / par:.1f} img/s trained, cluster start included)")
    print(f"ratio sequential / parallel = {seq / par:.2f} (2.00 would be perfect on 2 workers)")


if __name__ == "__main__":
    main()

"""Inference throughput on real-size JPEG 2000 files, and the estimate for Kaggle's hidden test set.

    .venv/bin/python benchmarks/inference.py [--n 16] [--model resnet10t] [--size 1024x512]

Measures (1) the data side alone: DICOM decode + preprocessing to the model's input in 2 DataLoader
workers (Kaggle has 2 CPUs), and (2) the whole predict loop with the model on this machine. On
Kaggle the model runs on the GPU, so the data side bounds the time; the estimate for ~32,000 images
is printed against the 9-hour limit. The baseline is a plain full-resolution pydicom decode loop in
the same 2 processes.
"""
from __future__ import annotations

import argparse
import time

import pandas as pd
import torch
from _realsize import realsize_files
from joblib import Parallel, delayed
from torch.utils.data import DataLoader

from mammo_utils import dicom
from mammo_utils.judge.inference import DicomDataset
from mammo_utils.learn.models import build_model
from mammo_utils.paths import parse_size
from mammo_utils.prepare.preprocess import PreprocessConfig

HIDDEN_TEST_IMAGES = 32_000
KAGGLE_LIMIT_HOURS = 9.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--model", default="resnet10t")
    ap.add_argument("--size", default="1024x512")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    size = parse_size(args.size)
    paths = realsize_files("j2k", 8)
    paths = (paths * ((args.n + len(paths) - 1) // len(paths)))[: args.n]
    df = pd.DataFrame({"patient_id": [p.parent.name for p in paths], "image_id": [p.stem for p in paths],
                       "laterality": "L"})
    data = paths[0].parent.parent.parent  # <data>/<split>_images/<patient>/<image>.dcm
    split = paths[0].parent.parent.name.removesuffix("_images")

    with Parallel(n_jobs=args.workers) as pool:
        pool(delayed(dicom.read_stored)(p, "pydicom") for p in paths[: args.workers])
        t0 = time.perf_counter()
        pool(delayed(dicom.read_stored)(p, "pydicom") for p in paths)
        baseline = len(paths) / (time.perf_counter() - t0)

    ds = DicomDataset(df, data, split, PreprocessConfig(size=size))
    loader = DataLoader(ds, batch_size=8, num_workers=args.workers, prefetch_factor=2)
    next(iter(DataLoader(ds, batch_size=1, num_workers=0)))  # warm-up imports
    t0 = time.perf_counter()
    for _ in loader:
        pass
    data_rate = len(ds) / (time.perf_counter() - t0)

    model = build_model(args.model).eval()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x, _ in loader:
            model(x)
    full_rate = len(ds) / (time.perf_counter() - t0)

    hours = HIDDEN_TEST_IMAGES / data_rate / 3600
    print(f"files: {len(paths)} x 3328x2560 12-bit JPEG 2000; input {size[0]}x{size[1]}; {args.workers} workers")
    print(f"baseline full-res pydicom decode: {baseline:.2f} img/s")
    print(f"data side (decode+preprocess):    {data_rate:.2f} img/s   x{data_rate / baseline:.2f} vs baseline")
    print(f"whole loop, {args.model} on CPU:   {full_rate:.2f} img/s")
    print(f"Kaggle estimate ({HIDDEN_TEST_IMAGES:,} images, data-bound, GPU model): {hours:.2f} h "
          f"of the {KAGGLE_LIMIT_HOURS:.0f} h limit (goal <= 3 h)")


if __name__ == "__main__":
    main()

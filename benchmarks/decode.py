"""Decode throughput per backend on real-size files, 1 and 2 processes, as ratios to pydicom.

    .venv/bin/python benchmarks/decode.py [--n 8]

Warm-up excluded (every worker decodes one file first). Prints images/s and the ratio to the
pydicom baseline measured in the same run.
"""
from __future__ import annotations

import argparse
import os
import time

from _realsize import realsize_files
from joblib import Parallel, delayed

from mammo_utils import dicom


def decode(path, backend, min_size):
    return dicom.read_stored(path, backend, min_size)[0].shape


def throughput(paths, backend, jobs, min_size=None, repeat=2) -> float:
    work = list(paths) * repeat
    with Parallel(n_jobs=jobs) as pool:
        pool(delayed(decode)(p, backend, min_size) for p in paths[:jobs])  # warm-up
        t0 = time.perf_counter()
        pool(delayed(decode)(p, backend, min_size) for p in work)
        return len(work) / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    args = ap.parse_args()
    print(f"cpu cores: {os.cpu_count()}; files: 3328x2560 12-bit")
    for syntax, cases in (("j2k", [("pydicom", None), ("dicomsdl", None), ("pillow", None),
                                   ("pillow", (1024, 512)), ("pillow", (512, 256))]),
                          ("jpeg_lossless", [("pydicom", None), ("dicomsdl", None), ("imagecodecs", None)])):
        paths = realsize_files(syntax, args.n)
        print(f"\n{syntax} ({dicom.TRANSFER_SYNTAXES[syntax]})")
        for jobs in (1, 2):
            base = throughput(paths, "pydicom", jobs)
            for backend, min_size in cases:
                rate = base if backend == "pydicom" and min_size is None else throughput(paths, backend, jobs, min_size)
                label = backend + (f" min_size={min_size[0]}x{min_size[1]}" if min_size else " full")
                print(f"  {jobs} proc  {label:28s} {rate:6.2f} img/s   x{rate / base:5.2f} vs pydicom")


if __name__ == "__main__":
    main()

"""DataLoader workers inside a spawned process (what a Dask worker is): forked against spawned, one run.

A Dask worker process starts by "spawn", and so would every DataLoader worker it starts: each one
imports torch, OpenCV and pandas again before it reads an image. ``create_loader`` forks them on Linux,
as PyTorch does in a plain process. Both loaders read the same preprocessed images in a spawned process,
from creating the loader to the end of one pass (a fold's validation; persistent workers are paid once
per loader). Prints seconds for each and the ratio spawned / forked.

    .venv/bin/python benchmarks/loader_start.py [--patients 8] [--workers 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def one_pass(png: str, workers: int, start_method: str | None) -> float:
    """Seconds from building the loader to the end of one pass, ``start_method`` None: create_loader's."""
    from torch.utils.data import DataLoader

    from mammo_utils.learn.data import MammoDataset, create_loader
    from mammo_utils.tables import read_manifest

    df = read_manifest(png)  # every image once
    t0 = time.perf_counter()
    ds = MammoDataset(df)
    if start_method is None:
        loader = create_loader(ds, 8, workers)
    else:
        loader = DataLoader(ds, batch_size=8, num_workers=workers, persistent_workers=True,
                            multiprocessing_context=start_method)
    for _ in loader:
        pass
    seconds = time.perf_counter() - t0
    del loader
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    from mammo_utils.prepare.preprocess import PreprocessConfig
    from mammo_utils.prepare.runner import run_preprocess
    from mammo_utils.synthetic import write_dataset

    root = Path(tempfile.mkdtemp(prefix="bench-loader-"))
    write_dataset(root / "data", patients=a.patients, seed=0, size=(384, 320), test_patients=1, jobs=2, progress=False)
    run_preprocess(root / "data", "train", root / "png", PreprocessConfig(size=(128, 64)), jobs=2, progress=False)
    png = str(root / "png")
    # one process started as a Dask worker is (spawned, not a daemon: it may start loader workers)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(one_pass, png, 0, None).result()  # warm-up: the process's own imports
        times = {label: [] for label in ("spawned", "forked (create_loader)")}
        for _ in range(a.repeats):  # interleaved, so that drift on a noisy machine hits both alike
            times["spawned"].append(pool.submit(one_pass, png, a.workers, "spawn").result())
            times["forked (create_loader)"].append(pool.submit(one_pass, png, a.workers, None).result())
    best = {label: min(t) for label, t in times.items()}
    print(f"one pass over {a.patients} patients' images at 128x64, {a.workers} loader workers, in a spawned process; "
          f"best of {a.repeats}")
    for label, seconds in best.items():
        print(f"  {label:24s} {seconds:6.2f} s")
    print(f"ratio spawned / forked = {best['spawned'] / best['forked (create_loader)']:.1f}")


if __name__ == "__main__":
    main()

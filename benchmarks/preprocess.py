"""Preprocessing throughput on real-size files, 2 processes, as ratios in one run:

  (a) full-resolution decode only, by each full decoder worth comparing, all measured here:
      JPEG 2000: gdcm through pydicom (the baseline of the "x4" goal; it decodes with threads, so it
      leads in one process) and dicomsdl (which leads with 2 processes); JPEG Lossless: libjpeg-turbo
      through imagecodecs (what we decode with) and dicomsdl (the baseline of the "x0.9" goal);
      ratios are printed against each, the fastest first (pydicom's header read costs ~0.2 ms of each);
  (b) our preprocessing to 1024x512 (reduced J2K decode or stored-value reduction, crop and resize
      on stored values, one table lookup for the output pixels, PNG write);
  (c) the seed-002 recipe: pydicom pixel_array, min-max, invert, squash to 512x512,
      threshold + largest component crop, PNG write;

and, in one process, the share of (b)'s time spent finding the breast. ``--tolerance`` also compares
(b)'s pixels with windowing the whole image first.

    .venv/bin/python benchmarks/preprocess.py [--n 8] [--syntax jpeg_lossless] [--tolerance]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from _realsize import realsize_files
from joblib import Parallel, delayed

from mammo_utils import dicom
from mammo_utils.prepare import crop as crop_ops
from mammo_utils.prepare.png import to_uint, write_png_atomic
from mammo_utils.prepare.preprocess import (
    PreprocessConfig,
    locate_breast,
    preprocess_file,
)


def full_decode(path, out, backend):
    return dicom.read_stored(path, backend)[0].shape


FULL_DECODERS = {"j2k": {"gdcm": "pydicom", "dicomsdl": "dicomsdl"},
                 "jpeg_lossless": {"libjpeg-turbo": "imagecodecs", "dicomsdl": "dicomsdl"}}


def ours(path, out):
    cv2.setNumThreads(1)  # as the preprocessing workers do
    img, _ = preprocess_file(path, PreprocessConfig(size=(1024, 512)))
    # a new file each time, as in a run (replacing a file makes ext4 flush the new one at once)
    write_png_atomic(Path(out) / f"{Path(path).stem}_{uuid.uuid4().hex}.png", img)
    return img.shape


def seed_recipe(path, out):
    import pydicom

    ds = pydicom.dcmread(path)
    img = ds.pixel_array.astype(np.float32)
    img = (img - img.min()) / (img.max() - img.min())
    if ds.PhotometricInterpretation == "MONOCHROME1":
        img = 1 - img
    img = cv2.resize(img, (512, 512))
    u8 = (img * 255).astype(np.uint8)
    _, mask = cv2.threshold(u8, 20, 255, cv2.THRESH_BINARY)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = stats[k, :4]
    crop = cv2.resize(u8[y:y + h, x:x + w], (512, 512))
    cv2.imwrite(str(Path(out) / (Path(path).stem + "_seed.png")), crop)
    return crop.shape


def segmentation_share(paths, out, repeat=3) -> float:
    """Seconds finding the breast (work image + segmentation) / seconds per image of (b), one process."""
    stored = [dicom.read_stored_image(p, min_size=(1024, 512)) for p in paths]
    locate_breast(stored[0])
    t0 = time.perf_counter()
    for _ in range(repeat):
        for s in stored:
            locate_breast(s)
    seg = (time.perf_counter() - t0) / (repeat * len(stored))
    ours(paths[0], out)
    t0 = time.perf_counter()
    for _ in range(repeat):
        for p in paths:
            ours(p, out)
    return seg / ((time.perf_counter() - t0) / (repeat * len(paths)))


def tolerance(paths, size=(1024, 512)) -> dict:
    """How far (b)'s output is from windowing first, in 8-bit levels, over the crop (markers kept):
    ``table``: the same resampling applied after the table instead of before it (what resizing the
    stored values costs); ``area``: a full INTER_AREA resize of the windowed image instead of
    integer blocks + bilinear (what the resampling choice costs)."""
    cfg = PreprocessConfig(size=size, mask_outside=False)
    diffs = {"table": [], "area": []}
    for p in paths:
        img, info = preprocess_file(p, cfg)
        s = dicom.read_stored_image(p, min_size=size)
        k = s.scale
        box = tuple(round(info[f"bbox_{c}"] / k) for c in ("y0", "x0", "y1", "x1"))
        shown = crop_ops.crop(s.display(s.stored), box)
        h, w = crop_ops.fit_shape(shown.shape, size)
        refs = {"table": crop_ops.resize(shown, (h, w)),
                "area": cv2.resize(np.ascontiguousarray(shown), (w, h), interpolation=cv2.INTER_AREA)}
        for name, ref in refs.items():
            ref = to_uint(ref)[:, ::-1] if info["flipped"] else to_uint(ref)
            diffs[name].append(np.abs(img[:h, :w].astype(int) - ref.astype(int)).ravel())
    return {name: (float(np.mean(np.concatenate(d))), float(np.percentile(np.concatenate(d), 99.9)),
                   int(np.concatenate(d).max())) for name, d in diffs.items()}


def rates(fns, paths, out, jobs=2, rounds=5):
    """img/s of each function, median over ``rounds`` interleaved rounds (machine noise hits all alike)."""
    import statistics

    work = list(paths) * 2
    seen = {name: [] for name in fns}
    with Parallel(n_jobs=jobs) as pool:
        for name, fn in fns.items():
            pool(delayed(fn)(p, out) for p in paths[:jobs])  # warm-up
        for _ in range(rounds):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                pool(delayed(fn)(p, out) for p in work)
                seen[name].append(len(work) / (time.perf_counter() - t0))
    return {name: statistics.median(v) for name, v in seen.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds; the median is reported")
    ap.add_argument("--tolerance", action="store_true", help="also compare (b)'s pixels with windowing first")
    ap.add_argument("--syntax", nargs="+", default=["j2k", "jpeg_lossless"], choices=["j2k", "jpeg_lossless"])
    args = ap.parse_args()
    print(f"cpu cores: {os.cpu_count()}; {args.jobs} processes; files: 3328x2560 12-bit; "
          f"median of {args.rounds} interleaved rounds")
    with tempfile.TemporaryDirectory() as out:
        for syntax in args.syntax:
            paths = realsize_files(syntax, args.n)
            fns = {f"(a) {name} full decode": partial(full_decode, backend=backend)
                   for name, backend in FULL_DECODERS[syntax].items()}
            fns.update({"(b) ours -> 1024x512": ours, "(c) seed recipe": seed_recipe})
            r = rates(fns, paths, out, args.jobs, args.rounds)
            b = r["(b) ours -> 1024x512"]
            print(f"\n{syntax}: " + " | ".join(f"{name} {rate:.2f} img/s" for name, rate in r.items()))
            others = sorted((k for k in r if not k.startswith("(b)")), key=lambda k: -r[k])
            print("  (b) = " + "   ".join(f"x{b / r[k]:.2f} {k}" for k in others))
            print(f"  finding the breast: {segmentation_share(paths[:4], out):.1%} of (b)'s time")
            if args.tolerance:
                for name, (mean, p999, worst) in tolerance(paths).items():
                    print(f"  tolerance vs windowing first ({name}): mean {mean:.3f}, 99.9th percentile {p999:.0f}, "
                          f"max {worst} levels of 255")


if __name__ == "__main__":
    main()

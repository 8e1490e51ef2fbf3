"""Seconds for the patient viewer to show the next patient on real-size JPEG 2000 files.

    .venv/bin/python benchmarks/viewer.py [--size 5355x4915] [--patients 3]

Writes (once, cached) patients of four views each at the largest RSNA size, then times
``next()`` + ``render()`` on patients not seen before (cold: decode at screen size) and again on a
patient in the LRU cache (warm), with the box and mask overlays on. The baseline is a full-resolution
decode of the same four files in the same run.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mammo_utils import dicom, synthetic
from mammo_utils.explore.viewer import PatientViewer
from mammo_utils.paths import parse_size

CACHE = Path(__file__).resolve().parent / "_data"


def write_patients(size, n_patients: int) -> Path:
    data = CACHE / f"viewer_{size[0]}x{size[1]}"
    if (data / "train.csv").exists() and len(pd.read_csv(data / "train.csv")) == 4 * n_patients:
        return data
    machine = next(m for m in synthetic.MACHINES if m.machine_id == 49)
    rows = []
    for p in range(n_patients):
        for k, (lat, view) in enumerate([("L", "CC"), ("R", "CC"), ("L", "MLO"), ("R", "MLO")]):
            rng = np.random.default_rng([p, k])
            breast = synthetic.breast_params(rng, 0.4, False)
            a, _ = synthetic.draw_breast(rng, size, view, 0.4, breast)
            a = a[:, ::-1] if lat == "R" else a
            stored, attrs = synthetic.to_stored(a, machine, rng)
            image_id = 1000 * (p + 1) + k
            dicom.write_dicom(data / "train_images" / str(p + 1) / f"{image_id}.dcm", stored,
                              {**attrs, "BitsStored": 12}, "j2k")
            rows.append(dict(site_id=1, patient_id=p + 1, image_id=image_id, laterality=lat, view=view, age=60,
                             cancer=0, machine_id=49))
    pd.DataFrame(rows).to_csv(data / "train.csv", index=False)
    return data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="5355x4915")
    ap.add_argument("--patients", type=int, default=3)
    args = ap.parse_args()
    size = parse_size(args.size)
    data = write_patients(size, args.patients)
    files = sorted((data / "train_images" / "2").glob("*.dcm"))
    t0 = time.perf_counter()
    for f in files:
        dicom.read_stored(f)
    full = time.perf_counter() - t0
    v = PatientViewer(data, display_px=512)
    v.set_overlays(box=True, mask=True)
    v.render()
    cold = []
    for _ in range(args.patients - 1):
        t0 = time.perf_counter()
        v.next().render()
        cold.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    v.previous().render()
    warm = time.perf_counter() - t0
    print(f"{args.size} JPEG 2000, 4 views per patient, box and mask overlays on, one process")
    print(f"  baseline: full-resolution decode of the 4 files: {full:.2f} s")
    print(f"  next patient (decoded at screen size): {np.mean(cold):.2f} s  = x{full / np.mean(cold):.1f} faster")
    print(f"  back to a cached patient: {warm:.2f} s")


if __name__ == "__main__":
    main()

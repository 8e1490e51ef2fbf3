"""Import time per 1,000 files against a plain header-read loop over the same files, in the same run.

    .venv/bin/python benchmarks/import_datasets.py [--studies 250] [--patients 60] [--jobs 2]

VinDr-Mammo (``--studies`` x 4 images) is imported from its CSVs and one header pass (in ``--jobs``
processes, no pixel decoded: each file checked whole, its SOPInstanceUID and a key of its stored
pixels read for duplicates) and a link. CBIS-DDSM (``--patients`` x 2
views, each with an ROI mask and a cropped lesion) must read headers (to tell the mask from the crop
by shape) and its masks' pixels (for the boxes), in ``--jobs`` processes. The baseline reads every
DICOM header of the dataset with pydicom in one process, as a hand-written converter would. Ratios
below 1 mean the import is faster than reading the headers once.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pydicom

from mammo_utils.datasets import import_dataset
from mammo_utils.synthetic.public import write_cbis, write_vindr


def header_loop(src: Path) -> tuple[float, int]:
    """Seconds to read every DICOM header below ``src`` (pydicom, stop_before_pixels), and the count."""
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in (".dcm", ".dicom"))
    t0 = time.perf_counter()
    for p in files:
        pydicom.dcmread(p, stop_before_pixels=True)
    return time.perf_counter() - t0, len(files)


def measure(name: str, src: Path, out: Path, jobs: int) -> dict:
    base, n_files = header_loop(src)
    t0 = time.perf_counter()
    record = import_dataset(name, src, out, jobs=jobs, progress=False)
    seconds = time.perf_counter() - t0
    return {"dataset": name, "files": n_files, "images": record["counts"]["images"],
            "import_s_per_1000": 1000 * seconds / n_files, "headers_s_per_1000": 1000 * base / n_files,
            "ratio": seconds / base}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=250, help="VinDr studies (4 images each)")
    ap.add_argument("--patients", type=int, default=60, help="CBIS patients (2 views, 3 files each)")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_vindr(tmp / "vindr", studies=a.studies, shape=(128, 104))
        write_cbis(tmp / "cbis", patients=a.patients, shape=(160, 128))
        rows = [measure("vindr", tmp / "vindr", tmp / "out_vindr", a.jobs),
                measure("cbis-ddsm", tmp / "cbis", tmp / "out_cbis", a.jobs)]
    print(f"{'dataset':10s} {'files':>6s} {'images':>6s} {'import s/1000':>14s} {'headers s/1000':>15s} {'ratio':>6s}")
    for r in rows:
        print(f"{r['dataset']:10s} {r['files']:6d} {r['images']:6d} {r['import_s_per_1000']:14.2f} "
              f"{r['headers_s_per_1000']:15.2f} {r['ratio']:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Commands of the prepare stage: ``preprocess``, ``check-read``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import data_arg, jobs_arg, positive, size_arg

def _preprocess(a) -> int:
    from ..prepare.preprocess import PreprocessConfig
    from ..prepare.runner import run_preprocess

    cfg = PreprocessConfig(size=a.image_size, keep_aspect=not a.no_keep_aspect, bits=a.bits, crop=not a.no_crop,
                           orient=not a.no_orient, mask_outside=not a.no_mask, backend=a.backend,
                           reduced_decode=not a.full_decode, window_index=a.window_index)
    summary = run_preprocess(a.data_dir, a.split, a.preprocessed_dir, cfg, jobs=a.jobs, limit=a.limit,
                             scheduler=a.scheduler)
    print(json.dumps(summary, indent=2))
    if summary["failed"]:
        print(f"{summary['failed']} file(s) failed; see {Path(summary['out']) / 'errors.csv'}", file=sys.stderr)
        return 1
    return 0


def _check_read(a) -> int:
    """Read every DICOM of a dataset folder and print a summary (a smoke test of the decoders)."""
    from ..explore.eda import read_all_images

    summary, failures = read_all_images(a.data_dir, jobs=a.jobs)
    print(summary.to_string(index=False))
    if len(failures):
        print(f"\n{len(failures)} file(s) failed:", file=sys.stderr)
        for r in failures.itertuples():
            print(f"  {r.path}: {r.error}", file=sys.stderr)
        return 1
    return 0


def register(command) -> None:
    """Add these commands' parsers (``command(name, help)`` returns a subparser)."""
    s = command("preprocess", "DICOM -> cropped PNGs + manifest (resumable, parallel)")
    data_arg(s)
    s.add_argument("--split", default="train", help="train or test: reads <split>.csv and <split>_images/")
    s.add_argument("--preprocessed-dir", "--out", dest="preprocessed_dir", default=None,
                   help="output folder (default: <data>/<split>_<HxW>)")
    s.add_argument("--image-size", "--size", dest="image_size", type=size_arg, default="1024x512", help="output HxW")
    s.add_argument("--jobs", type=jobs_arg, default=2, help="worker processes (-1: all CPUs; capped at the CPU count)")
    s.add_argument("--scheduler", default=None,
                   help="run on Dask: local:N (a LocalCluster of N workers) or tcp://HOST:PORT (a running scheduler)")
    s.add_argument("--backend", default="auto", choices=["auto", "imagecodecs", "dicomsdl", "pydicom", "pillow"],
                   help="DICOM decoder (auto: the fastest for each transfer syntax)")
    s.add_argument("--bits", type=int, default=8, choices=[8, 16], help="PNG bit depth")
    s.add_argument("--limit", type=positive(int), default=None, help="first N images only")
    s.add_argument("--window-index", type=int, default=0, help="which of several WindowCenter/Width values")
    s.add_argument("--no-crop", action="store_true", help="keep the whole image (no breast box)")
    s.add_argument("--no-orient", action="store_true", help="do not flip the chest wall to the left")
    s.add_argument("--no-mask", action="store_true", help="keep labels and markers isolated from the breast")
    s.add_argument("--no-keep-aspect", action="store_true", help="stretch to the size instead of pad")
    s.add_argument("--full-decode", action="store_true", help="never decode a reduced JPEG 2000 level")
    s.set_defaults(func=_preprocess)


    s = command("check-read", "decode every DICOM of a dataset once; list the files that fail")
    data_arg(s)
    s.add_argument("--jobs", type=jobs_arg, default=2, help="worker processes (-1: all CPUs)")
    s.set_defaults(func=_check_read)

"""Commands of the judge stage: ``predict``."""
from __future__ import annotations

import sys

from .common import data_arg, jobs_arg, positive, share_arg
from .. import paths

def _predict(a) -> int:
    from ..judge.inference import predict

    sub, report = predict(a.data_dir, a.split, a.run_dirs, out=a.out_path, jobs=a.jobs, tta=a.tta,
                          binarize=not a.probabilities, batch_size=a.batch_size, scheduler=a.scheduler,
                          max_failed=a.max_failed)
    print(f"wrote {a.out_path}: {len(sub)} rows, mean prediction {sub.cancer.mean():.4f}; "
          f"{report['failed']} of {report['images']} images failed")
    if not report["ok"]:
        print(f"error: {report['failed']} of {report['images']} test images ({report['failed_share']:.1%}) failed, "
              f"more than --max-failed {report['max_failed']:.1%}; the submission is complete but those breasts "
              f"carry the prevalence. See the log above for the files.", file=sys.stderr)
        return 1
    return 0


def register(command) -> None:
    """Add these commands' parsers (``command(name, help)`` returns a subparser)."""
    s = command("predict", "test DICOMs -> submission.csv")
    data_arg(s)
    s.add_argument("--split", default="test", help="the CSV to predict; its breasts make the submission")
    s.add_argument("--run-dirs", "--runs", dest="run_dirs", nargs="+", required=True,
                   help="folders holding best.pt (a fold, or a folder of folds), or checkpoint files")
    s.add_argument("--out-path", "--out", dest="out_path", default=paths.SUBMISSION, help="submission CSV to write")
    s.add_argument("--jobs", type=jobs_arg, default=2, help="decoding processes (-1: all CPUs)")
    s.add_argument("--scheduler", default=None, help="preprocess on Dask first: local:N or tcp://HOST:PORT")
    s.add_argument("--batch-size", type=positive(int), default=None,
                   help="images per forward pass (default: the run's, twice its training batch)")
    s.add_argument("--tta", action="store_true", help="average with a vertically flipped copy (chest wall stays left)")
    s.add_argument("--probabilities", action="store_true", help="write probabilities, not 0/1 at the threshold")
    s.add_argument("--max-failed", type=share_arg, default=0.05,
                   help="exit 1 when more than this share of images fails (the submission is still written)")
    s.set_defaults(func=_predict)

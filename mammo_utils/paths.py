"""Every path convention of the workbook, in one place; no import-time side effects.

Data (read-only; the RSNA layout)::

    <data>/<split>.csv   <data>/<split>_images/<patient_id>/<image_id>.dcm   <data>/sample_submission.csv

A run folder::

    <run>/preprocessed/<split>_<HxW>/   manifest.csv errors.csv preprocess.json <patient>/<image>.png
    <run>/holdout.csv holdout.json     the locked holdout (patients no fold ever sees)
    <run>/folds.csv                     every other image with its fold and `sampled`
    <run>/oof_predictions.csv holdout_predictions.csv
    <run>/train/fold<k>/                config.json metrics.csv last.pt best.pt val_predictions.csv threshold.json
    <run>/notebooks/NN_name.ipynb       executed copies
    <run>/notebooks/NN_name_figK.png    every figure of the executed notebooks, as a file
    <run>/evaluation.json  <run>/submission.csv  <run>/summary.json  <run>/report.html

A sweep folder::

    <sweep>/_shared/preprocessed/<split>_<HxW>_<key>/   <sweep>/_shared/folds/folds_<key>.csv
    <sweep>/<combination>_seed<s>/      a run folder plus sweep_params.json
    <sweep>/comparison.csv

A Kaggle bundle::

    <bundle>/wheels/  <bundle>/run/train/fold<k>/  <bundle>/06_submission.ipynb
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

BEST = "best.pt"
LAST = "last.pt"
CONFIG = "config.json"
METRICS = "metrics.csv"
VAL_PREDICTIONS = "val_predictions.csv"
THRESHOLD = "threshold.json"
MANIFEST = "manifest.csv"
ERRORS = "errors.csv"
PREPROCESS_CONFIG = "preprocess.json"
SUBMISSION = "submission.csv"
PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the source tree (when installed editable)
SOURCE_NOTEBOOKS = PROJECT_ROOT / "notebooks"         # the notebooks the pipeline executes
MIN_SIDE_PX = 16
MAX_SIDE_PX = 8192  # twice the largest side a training image needs (2048x1024 is the RSNA winners' size)


def parse_size(text) -> tuple[int, int]:
    """'1024x512' -> (1024, 512); a (h, w) pair passes through. Both sides must be >= 16 px."""
    try:
        if isinstance(text, (tuple, list)):
            h, w = (int(v) for v in text)
        else:
            h, w = (int(v) for v in str(text).lower().split("x"))
    except (TypeError, ValueError):
        raise ValueError(f"size must look like HxW, e.g. 1024x512; got {text!r}") from None
    if h < MIN_SIDE_PX or w < MIN_SIDE_PX:
        raise ValueError(f"size {h}x{w} is too small: both sides must be at least {MIN_SIDE_PX} px")
    if h > MAX_SIDE_PX or w > MAX_SIDE_PX:
        raise ValueError(f"size {h}x{w} is too large: both sides must be at most {MAX_SIDE_PX} px")
    return h, w


def format_size(size) -> str:
    h, w = parse_size(size)
    return f"{h}x{w}"


# ---- ids -----------------------------------------------------------------------------------------

ID_TEXT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # letters, digits, '._-'; no separator, no leading '.' or '-'
WINDOWS_NAMES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}
MAX_ID_CHARS = 200  # a file name is at most 255 bytes on common file systems; '.dcm' and prefixes need room


def id_problem(value) -> str | None:
    """Why ``value`` cannot be an id (ids become folder and file names), or None when it can.

    Text read from a CSV cell is data, never a path: an id holding a separator, ``..``, a leading
    ``.`` or ``-``, a control character, a character or a device name Windows treats specially, a
    trailing ``.``, or nothing at all, would name a file somewhere else (or none)."""
    missing = value is None or (isinstance(value, float) and math.isnan(value))  # an empty CSV cell reads as NaN
    text = "" if missing else str(value)
    if not text.strip():
        return "it is empty"
    if "/" in text or "\\" in text:
        return "it holds a path separator"
    if ".." in text:
        return "it holds '..'"
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return "it holds a control character"
    if text[0] in ".-":
        return f"it starts with {text[0]!r}"
    if text.split(".")[0].upper() in WINDOWS_NAMES:
        return "it is a device name on Windows"
    if text.endswith("."):
        return "it ends with '.'"
    if len(text) > MAX_ID_CHARS:
        return f"it is longer than {MAX_ID_CHARS} characters"
    if not ID_TEXT.match(text):
        return "it may hold only letters, digits, '.', '_' and '-'"
    return None


def safe_id(value, what: str = "id", where: str = "") -> str:
    """``value`` as id text, or one UserError naming where it came from, the column and the value."""
    problem = id_problem(value)
    if problem:
        from .errors import UserError

        raise UserError(f"{where + ': ' if where else ''}{what} {str(value)!r} cannot name a file: {problem}")
    return str(value)


def _inside(root: Path, path: Path) -> Path:
    """``path``, after checking that it stays below ``root`` once ``..`` are resolved (defence in depth)."""
    if os.path.commonpath([os.path.abspath(root), os.path.abspath(path)]) != os.path.abspath(root):
        from .errors import UserError

        raise UserError(f"{path} lies outside {root}; an id must never name a path")
    return path


# ---- data ----------------------------------------------------------------------------------------

def split_csv(data, split: str) -> Path:
    return Path(data) / f"{split}.csv"


def images_dir(data, split: str) -> Path:
    return Path(data) / f"{split}_images"


def dicom_path(data, split: str, patient_id, image_id) -> Path:
    """``<data>/<split>_images/<patient_id>/<image_id>.dcm``; an id that would name another path is refused."""
    root = images_dir(data, split)
    return _inside(root, root / safe_id(patient_id, "patient_id") / f"{safe_id(image_id, 'image_id')}.dcm")


def sample_submission(data) -> Path:
    return Path(data) / "sample_submission.csv"


def synthetic_truth(data) -> Path:
    return Path(data) / "synthetic_truth.csv"


def synthetic_masks_dir(data) -> Path:
    return Path(data) / "synthetic_masks"


def synthetic_mask(data, patient_id, image_id) -> Path:
    """The generator's exact tissue mask of one image (a bi-level PNG)."""
    return synthetic_masks_dir(data) / str(patient_id) / f"{image_id}.png"


# ---- run folder ----------------------------------------------------------------------------------

def preprocessed_dir(run, split: str, size) -> Path:
    """Where a run keeps its preprocessed images for one split and size."""
    return Path(run) / "preprocessed" / f"{split}_{format_size(size)}"


def png_relpath(patient_id, image_id) -> str:
    """``<patient_id>/<image_id>.png`` below a preprocessing folder; an id that would name another path is refused."""
    return f"{safe_id(patient_id, 'patient_id')}/{safe_id(image_id, 'image_id')}.png"


def folds_csv(run) -> Path:
    return Path(run) / "folds.csv"


def train_dir(run, fold: int) -> Path:
    return Path(run) / "train" / f"fold{fold}"


def train_root(run) -> Path:
    return Path(run) / "train"


def evaluation_json(run) -> Path:
    return Path(run) / "evaluation.json"


def submission_csv(run) -> Path:
    return Path(run) / SUBMISSION


def image_predictions_csv(submission) -> Path:
    """The per-image predictions written beside a submission file."""
    submission = Path(submission)
    return submission.with_name(submission.stem + "_images.csv")


def submission_record(submission) -> Path:
    """What a submission was made with (its checkpoints' fingerprints, threshold, aggregation), beside it."""
    submission = Path(submission)
    return submission.with_name(submission.stem + ".json")


def summary_json(run) -> Path:
    return Path(run) / "summary.json"


def torchrun_config(run) -> Path:
    """The config a torchrun launch reads (written by notebook 04's ``gpus > 1``)."""
    return Path(run) / "torchrun_config.json"


def sweep_params(run) -> Path:
    return Path(run) / "sweep_params.json"


def comparison_csv(sweep) -> Path:
    return Path(sweep) / "comparison.csv"


def sweep_cache(sweep) -> Path:
    """What the runs of a sweep share: preprocessed images and folds."""
    return Path(sweep) / "_shared"


def shared_preprocessed(sweep, split: str, size, key: str) -> Path:
    return sweep_cache(sweep) / "preprocessed" / f"{split}_{format_size(size)}_{key}"


def shared_folds(sweep, key: str) -> Path:
    return sweep_cache(sweep) / "folds" / f"folds_{key}.csv"


def bundle_wheels(bundle) -> Path:
    return Path(bundle) / "wheels"


def bundle_run(bundle) -> Path:
    return Path(bundle) / "run"


def holdout_csv(run) -> Path:
    """The locked holdout's images (notebook 03): no fold, training step or threshold ever sees them."""
    return Path(run) / "holdout.csv"


def holdout_json(run) -> Path:
    """How the holdout was drawn and its fingerprint."""
    return Path(run) / "holdout.json"


def oof_csv(run) -> Path:
    """Every fold's validation predictions of its best epoch, pooled (out of fold)."""
    return Path(run) / "oof_predictions.csv"


def holdout_predictions_csv(run) -> Path:
    return Path(run) / "holdout_predictions.csv"


def stacking_csv(run) -> Path:
    """Holdout breasts with the stacked (OOF probability + metadata) prediction, from notebook 05."""
    return Path(run) / "stacking_holdout_predictions.csv"


def tracking_json(run) -> Path:
    """The run's MLflow run id and store, so a rerun continues the same tracking run."""
    return Path(run) / "tracking.json"


def report_html(run) -> Path:
    """Every executed notebook of a run in one HTML file (readable without Jupyter)."""
    return Path(run) / "report.html"


def notebooks_dir(run) -> Path:
    return Path(run) / "notebooks"


def model_card_md(run) -> Path:
    """The run described for a reader: intended use, data, every estimate with its interval, operating
    points beside the radiologists', calibration, subgroups and limitations."""
    return Path(run) / "model_card.md"


def model_card_json(run) -> Path:
    """The figures of ``model_card.md`` as data (thresholds, counts, intervals)."""
    return Path(run) / "model_card.json"

"""Command line: ``python -m mammo_utils <stage> ...``; options carry the notebooks' parameter names.

Expected errors (bad input, missing files, bad parameters) print one line and exit 2; a bug keeps
its traceback. Older option names (``--size``, ``--runs``...) still work as aliases.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from . import paths

PRESET_NAMES = ["default", "hard", "hard_metadata", "hard_control"]  # synthetic.dataset.PRESETS (tested to agree)


def _synth(a) -> int:
    from .synthetic import write_dataset

    truth = write_dataset(a.out, patients=a.patients, seed=a.seed, size=a.image_size, test_patients=a.test_patients,
                          cancer_rate=a.cancer_rate, lesion_contrast=a.lesion_contrast, jobs=a.jobs, preset=a.preset)
    train = truth[truth.split == "train"]
    n_breasts = train.groupby(["patient_id", "laterality"]).cancer.max()
    print(f"wrote {len(truth)} images ({len(train)} train, {len(truth) - len(train)} test) of "
          f"{truth.patient_id.nunique()} patients to {a.out}; cancer breasts in train: {int(n_breasts.sum())}")
    return 0


def _import_dataset(a) -> int:
    from .datasets import import_dataset

    record = import_dataset(a.dataset, a.src, a.out, copy=a.copy, label=a.label, jobs=a.jobs)
    c = record["counts"]
    print(f"{a.dataset}: {c['images']} images of {c['patients']} patients ({c['cancer_breasts']} of {c['breasts']} "
          f"breasts cancer), {c['lesion_boxes']} lesion boxes, {c['skipped']} file(s) skipped -> {a.out}")
    print(f"label: {record['label']}: {record['label_mapping']}")
    for note in record["notes"]:
        print(f"found: {note}")
    for s in record["skipped"][:10]:
        print(f"skipped: {s['file']}: {s['reason']}", file=sys.stderr)
    if len(record["skipped"]) > 10:
        print(f"... and {len(record['skipped']) - 10} more skipped files: see {Path(a.out) / 'import.json'}",
              file=sys.stderr)
    return 0


def _combine(a) -> int:
    from .datasets import combine

    record = combine(a.folders, a.out, copy=a.copy)
    for source, c in record["counts"].items():
        print(f"{source}: {c['images']} images, {c['patients']} patients, {c['cancer_images']} cancer images")
    print(f"-> {a.out}")
    return 0


def _preprocess(a) -> int:
    from .preprocess import PreprocessConfig, run_preprocess

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
    from .eda import read_all_images

    summary, failures = read_all_images(a.data_dir, jobs=a.jobs)
    print(summary.to_string(index=False))
    if len(failures):
        print(f"\n{len(failures)} file(s) failed:", file=sys.stderr)
        for r in failures.itertuples():
            print(f"  {r.path}: {r.error}", file=sys.stderr)
        return 1
    return 0


def _folds(a) -> int:
    from .estimates import split_holdout, write_holdout
    from .sampling import folds_summary, make_folds
    from .tables import read_table

    strategy = a.strategy or ("paired" if a.neg_per_pos is not None else "all")
    df = read_table(a.data_dir, "train")
    holdout, df, info = split_holdout(df, a.holdout_fraction, a.holdout_seed)
    write_holdout(Path(a.out).parent, holdout, info)
    print(f"holdout: {info['patients']} patients, {info['images']} images ({info['how']}), fingerprint "
          f"{info['fingerprint']} -> {Path(a.out).parent / 'holdout.csv'}")
    folds = make_folds(df, strategy, a.neg_per_pos if a.neg_per_pos is not None else 1.0, a.n_splits, a.seed,
                       a.label_control)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    folds.to_csv(a.out, index=False)
    print(f"{strategy}: {len(folds)} of {len(df)} images -> {a.out}")
    print(folds_summary(folds).to_string())
    return 0


def _train(a) -> int:
    from .config import TrainConfig
    from .distributed import shutdown_distributed
    from .errors import UserError
    from .pipeline import parse_value
    from .train import train

    cfg = TrainConfig.from_json_file(a.config) if a.config else TrainConfig()
    for kv in a.set or []:
        key, sep, value = kv.partition("=")
        if not sep:
            raise UserError(f"--set {kv!r}: expected KEY=VALUE")
        cfg = cfg.replace(**{key: parse_value(value, getattr(TrainConfig(), key, None))})
    try:
        result = train(cfg)
    finally:
        shutdown_distributed()
    print(json.dumps(result, indent=2, default=str))
    return 0


def _predict(a) -> int:
    from .inference import predict

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


def _pipeline(a) -> int:
    from .pipeline import run_pipeline

    params = {name: value for name, value in a.p or []}
    return run_pipeline(a.data_dir, a.run_dir, params=params, start=a.from_, only=a.only, synth_patients=a.patients,
                        preset=a.preset)


def _sweep(a) -> int:
    from .sweep import run_sweep

    return run_sweep(a.data_dir, a.run_dir, a.grid, seeds=a.seeds, params={n: v for n, v in a.p or []},
                     synth_patients=a.patients, compare=not a.no_compare, baseline=a.baseline, preset=a.preset)


def _bundle(a) -> int:
    from .bundle import build_bundle

    path = build_bundle(a.run_dir, a.out, with_deps=not a.no_deps)
    print(f"Kaggle bundle written to {path}")
    return 0


def _size(text: str):
    from .paths import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _jobs(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if n == 0 or n < -1:
        raise argparse.ArgumentTypeError(f"jobs must be a positive number of processes or -1 (all CPUs), got {n}")
    return n


def _positive(kind):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
        return v
    return parse


def _share(text: str) -> float:
    v = float(text)
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"must be a share between 0 and 1, got {v}")
    return v


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option with its default; descriptions and epilogs keep their line breaks."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose epilog is made only when help is shown (``epilog_fn``)."""

    def __init__(self, *args, epilog_fn=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.epilog_fn = epilog_fn

    def format_help(self) -> str:
        if self.epilog_fn is not None:
            self.epilog = self.epilog_fn()
        return super().format_help()


def notebook_epilog() -> str:
    """Every notebook parameter with its default, for ``pipeline --help`` and ``sweep --help``."""
    from .pipeline import COMPARE_NOTEBOOK, NOTEBOOKS, notebook_defaults, notebook_help

    lines = ["Notebook parameters (-p NAME VALUE sets it in every notebook that declares it, -p NN.NAME VALUE in "
             "notebook NN only; `none` is None):"]
    for name in NOTEBOOKS + [COMPARE_NOTEBOOK]:
        lines.append(f"  {name}:")
        meaning = notebook_help(name)
        lines += [f"    {k:22s} {json.dumps(v, default=str):28s} {meaning.get(k, '')}"
                  for k, v in notebook_defaults(name).items()]
    return "\n".join(lines)


def train_epilog() -> str:
    """Every TrainConfig field with its default and meaning, for ``train --help``."""
    from .config import field_help

    rows = [f"  {name:20s} {json.dumps(default):30s} {meaning}" for name, default, meaning in field_help()]
    return "TrainConfig fields (for --config JSON and --set KEY=VALUE):\n" + "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mammo_utils", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    def command(name: str, help: str, epilog_fn=None):
        return sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".", epilog_fn=epilog_fn,
                              formatter_class=HelpFormatter)

    def data_arg(s, required=True, default=None):
        s.add_argument("--data-dir", "--data", dest="data_dir", required=required, default=default,
                       help="folder in the RSNA layout: <split>.csv + <split>_images/<patient_id>/<image_id>.dcm")

    s = command("synth", "write the synthetic RSNA-format dataset (into a missing or empty folder)")
    s.add_argument("--out", required=True, help="a missing or empty folder")
    s.add_argument("--patients", type=_positive(int), default=200, help="training patients (>= 2)")
    s.add_argument("--test-patients", type=_positive(int), default=None, help="test patients (default: as many as training patients, at most 200; the labelled held-out estimate)")
    s.add_argument("--seed", type=int, default=0, help="same seed, same files")
    s.add_argument("--image-size", "--size", dest="image_size", type=_size, default="640x512",
                   help="base image size HxW (machines vary around it; at least 64x64)")
    s.add_argument("--preset", default="default", choices=PRESET_NAMES,
                   help="default: the demo data; hard: a benchmark where training recipes differ; hard_metadata: "
                        "hard with a table that carries signal (age risk, machine looks, BIRADS/density from the "
                        "image); hard_control: hard with a table that carries none")
    s.add_argument("--cancer-rate", type=float, default=None, help="share of patients with a cancer breast")
    s.add_argument("--lesion-contrast", type=float, default=None, help="mass contrast in attenuation units")
    s.add_argument("--jobs", type=_jobs, default=-1, help="worker processes (-1: all CPUs)")
    s.set_defaults(func=_synth)

    from .datasets import IMPORTERS, labels

    label_help = "; ".join(f"{name}: " + ", ".join(labels(name)) for name in IMPORTERS)
    s = command("import-dataset", "bring a public dataset (as downloaded and unpacked) into the RSNA layout")
    s.add_argument("dataset", choices=sorted(IMPORTERS), help="which dataset SRC holds")
    s.add_argument("src", metavar="SRC", help="the dataset's folder (never written to)")
    s.add_argument("--out", required=True, help="folder to write: train.csv, train_images/, lesions.csv, import.json")
    s.add_argument("--copy", action="store_true", help="copy the DICOMs instead of linking them")
    s.add_argument("--label", default=None, help=f"label mapping (default: the first) - {label_help}")
    s.add_argument("--jobs", type=_jobs, default=-1, help="header-reading processes (-1: all CPUs)")
    s.set_defaults(func=_import_dataset)

    s = command("combine", "several RSNA-layout folders as one, ids unique across sources, with a source column")
    s.add_argument("folders", nargs="+", metavar="FOLDER", help="imported datasets or RSNA-layout folders")
    s.add_argument("--out", required=True, help="folder to write (links to the parts' images)")
    s.add_argument("--copy", action="store_true", help="copy the DICOMs instead of linking them")
    s.set_defaults(func=_combine)

    s = command("preprocess", "DICOM -> cropped PNGs + manifest (resumable, parallel)")
    data_arg(s)
    s.add_argument("--split", default="train", help="train or test: reads <split>.csv and <split>_images/")
    s.add_argument("--preprocessed-dir", "--out", dest="preprocessed_dir", default=None,
                   help="output folder (default: <data>/<split>_<HxW>)")
    s.add_argument("--image-size", "--size", dest="image_size", type=_size, default="1024x512", help="output HxW")
    s.add_argument("--jobs", type=_jobs, default=2, help="worker processes (-1: all CPUs; capped at the CPU count)")
    s.add_argument("--scheduler", default=None,
                   help="run on Dask: local:N (a LocalCluster of N workers) or tcp://HOST:PORT (a running scheduler)")
    s.add_argument("--backend", default="auto", choices=["auto", "imagecodecs", "dicomsdl", "pydicom", "pillow"],
                   help="DICOM decoder (auto: the fastest for each transfer syntax)")
    s.add_argument("--bits", type=int, default=8, choices=[8, 16], help="PNG bit depth")
    s.add_argument("--limit", type=_positive(int), default=None, help="first N images only")
    s.add_argument("--window-index", type=int, default=0, help="which of several WindowCenter/Width values")
    s.add_argument("--no-crop", action="store_true", help="keep the whole image (no breast box)")
    s.add_argument("--no-orient", action="store_true", help="do not flip the chest wall to the left")
    s.add_argument("--no-mask", action="store_true", help="keep labels and markers isolated from the breast")
    s.add_argument("--no-keep-aspect", action="store_true", help="stretch to the size instead of pad")
    s.add_argument("--full-decode", action="store_true", help="never decode a reduced JPEG 2000 level")
    s.set_defaults(func=_preprocess)

    s = command("check-read", "decode every DICOM of a dataset once; list the files that fail")
    data_arg(s)
    s.add_argument("--jobs", type=_jobs, default=2, help="worker processes (-1: all CPUs)")
    s.set_defaults(func=_check_read)

    s = command("folds", "sampling strategy + patient-grouped stratified folds -> folds.csv")
    data_arg(s)
    s.add_argument("--out", required=True, help="folds.csv to write")
    s.add_argument("--strategy", default=None, choices=["all", "paired"],
                   help="all: every image | paired: cancer patients + neg_per_pos cancer-free patients each "
                        "(default: paired when --neg-per-pos is given, else all)")
    s.add_argument("--neg-per-pos", type=float, default=None, help="paired: cancer-free patients per cancer patient")
    s.add_argument("--n-splits", type=_positive(int), default=5, help="number of folds")
    s.add_argument("--label-control", default="none", choices=["none", "shuffled"],
                   help="shuffled: permute cancer labels between breasts (a leakage control)")
    s.add_argument("--seed", type=int, default=0, help="seeds the undersampling and the folds")
    s.add_argument("--holdout-fraction", type=float, default=0.15,
                   help="patients locked away before the folds (holdout.csv beside --out; 0: none)")
    s.add_argument("--holdout-seed", type=int, default=0, help="which patients the holdout takes")
    s.set_defaults(func=_folds)

    s = command("train", "train one fold (under torchrun: one process per GPU, DDP)", epilog_fn=train_epilog)
    s.add_argument("--config", default=None, help="JSON file of TrainConfig fields")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one TrainConfig field (repeatable)")
    s.set_defaults(func=_train)

    s = command("predict", "test DICOMs -> submission.csv")
    data_arg(s)
    s.add_argument("--split", default="test", help="the CSV to predict; its breasts make the submission")
    s.add_argument("--run-dirs", "--runs", dest="run_dirs", nargs="+", required=True,
                   help="folders holding best.pt (a fold, or a folder of folds), or checkpoint files")
    s.add_argument("--out-path", "--out", dest="out_path", default=paths.SUBMISSION, help="submission CSV to write")
    s.add_argument("--jobs", type=_jobs, default=2, help="decoding processes (-1: all CPUs)")
    s.add_argument("--scheduler", default=None, help="preprocess on Dask first: local:N or tcp://HOST:PORT")
    s.add_argument("--batch-size", type=_positive(int), default=16, help="images per forward pass")
    s.add_argument("--tta", action="store_true", help="average with a vertically flipped copy (chest wall stays left)")
    s.add_argument("--probabilities", action="store_true", help="write probabilities, not 0/1 at the threshold")
    s.add_argument("--max-failed", type=_share, default=0.05,
                   help="exit 1 when more than this share of images fails (the submission is still written)")
    s.set_defaults(func=_predict)

    s = command("pipeline", "run notebooks 01-06 with papermill", epilog_fn=notebook_epilog)
    data_arg(s, required=False, default="data/synthetic")
    s.add_argument("--run-dir", "--run", dest="run_dir", default="runs/demo", help="run folder to write")
    s.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="notebook parameter: NAME (every notebook declaring it) or NN.NAME (notebook NN only)")
    s.add_argument("--from", dest="from_", metavar="NN", default=None, help="first notebook number, e.g. 04")
    s.add_argument("--only", metavar="NN", default=None, help="run only this notebook number")
    s.add_argument("--patients", type=_positive(int), default=200,
                   help="synthetic patients when --data is a missing or empty folder")
    s.add_argument("--preset", default="default", choices=PRESET_NAMES, help="synthetic preset for an empty --data")
    s.set_defaults(func=_pipeline)

    s = command("sweep", "run the pipeline once per parameter combination and compare the runs",
                epilog_fn=notebook_epilog)
    data_arg(s, required=False, default="data/synthetic")
    s.add_argument("--run-dir", "--run", dest="run_dir", required=True, help="sweep folder (one run folder per combination)")
    s.add_argument("--grid", required=True, help="YAML or JSON mapping NN.param -> list of values")
    s.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds: an axis of the grid")
    s.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"), help="fixed notebook parameter")
    s.add_argument("--baseline", default=None, help="combination name to compare against (default: the first)")
    s.add_argument("--no-compare", action="store_true", help="skip notebook 07 at the end")
    s.add_argument("--patients", type=_positive(int), default=200, help="synthetic patients for an empty --data")
    s.add_argument("--preset", default="default", choices=PRESET_NAMES, help="synthetic preset for an empty --data")
    s.set_defaults(func=_sweep)

    s = command("kaggle-bundle", "folder to upload as a Kaggle dataset (wheels + run)")
    s.add_argument("--run-dir", "--run", dest="run_dir", required=True, help="the run whose checkpoints to ship")
    s.add_argument("--out", required=True, help="bundle folder to write")
    s.add_argument("--no-deps", action="store_true", help="skip downloading dependency wheels")
    s.set_defaults(func=_bundle)
    return p


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds `finally` blocks, which shut worker pools down


def main(argv=None) -> int:
    from .dicom import DicomReadError
    from .errors import UserError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args) or 0)
    except (UserError, DicomReadError, FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError,
            IsADirectoryError, FloatingPointError) as exc:  # FloatingPointError: training diverged
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

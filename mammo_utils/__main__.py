"""Command line: ``python -m mammo_utils <stage> ...``; flags mirror each notebook's parameters cell."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _synth(a) -> int:
    from .preprocess import parse_size
    from .synthetic import write_dataset

    truth = write_dataset(a.out, patients=a.patients, seed=a.seed, size=parse_size(a.size),
                          test_patients=a.test_patients, cancer_rate=a.cancer_rate,
                          lesion_contrast=a.lesion_contrast, jobs=a.jobs)
    train = truth[truth.split == "train"]
    n_breasts = train.groupby(["patient_id", "laterality"]).cancer.max()
    print(f"wrote {len(truth)} images ({len(train)} train, {len(truth) - len(train)} test) of "
          f"{truth.patient_id.nunique()} patients to {a.out}; cancer breasts in train: {int(n_breasts.sum())}")
    return 0


def _preprocess(a) -> int:
    from .preprocess import PreprocessConfig, run_preprocess

    cfg = PreprocessConfig(size=a.size, keep_aspect=not a.no_keep_aspect, bits=a.bits, crop=not a.no_crop,
                           orient=not a.no_orient, mask_outside=not a.no_mask, backend=a.backend, reduced_decode=not a.full_decode,
                           window_index=a.window_index)
    summary = run_preprocess(a.data, a.split, a.out, cfg, jobs=a.jobs, limit=a.limit)
    print(json.dumps(summary, indent=2))
    if summary["failed"]:
        print(f"{summary['failed']} file(s) failed; see {Path(summary['out']) / 'errors.csv'}", file=sys.stderr)
        return 1
    return 0


def _check_read(a) -> int:
    """Read every DICOM of a dataset folder and print a summary (a smoke test of the decoders)."""
    from .eda import read_all_images

    summary = read_all_images(a.data, jobs=a.jobs)
    print(summary.to_string())
    return 0 if summary.failed.sum() == 0 else 1


def _folds(a) -> int:
    import pandas as pd

    from .sampling import paired_breast_undersample, patient_folds

    df = pd.read_csv(Path(a.data) / "train.csv")
    if a.neg_per_pos is not None:
        df = paired_breast_undersample(df, a.neg_per_pos, seed=a.seed)
    folds = patient_folds(df, n_splits=a.n_splits, seed=a.seed)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    folds.to_csv(a.out, index=False)
    print(folds.groupby("fold").agg(images=("image_id", "size"), patients=("patient_id", "nunique"),
                                    cancer_images=("cancer", "sum")).to_string())
    return 0


def _train(a) -> int:
    from .pipeline import parse_value
    from .train import TrainConfig, train

    cfg = TrainConfig.from_json_file(a.config) if a.config else TrainConfig()
    for kv in a.set or []:
        key, _, value = kv.partition("=")
        cfg = cfg.replace(**{key: parse_value(value)})
    result = train(cfg)
    print(json.dumps(result, indent=2, default=str))
    return 0


def _predict(a) -> int:
    from .inference import predict

    sub = predict(Path(a.data) / f"{a.split}.csv", Path(a.data) / f"{a.split}_images", a.runs, out=a.out,
                  jobs=a.jobs, tta=a.tta, binarize=not a.probabilities, batch_size=a.batch_size)
    print(f"wrote {a.out}: {len(sub)} rows, mean prediction {sub.cancer.mean():.4f}")
    return 0


def _pipeline(a) -> int:
    from .pipeline import run_pipeline

    params = {}
    for name, value in a.p or []:
        params[name] = value
    return run_pipeline(a.data, a.run, params=params, start=a.from_, only=a.only, synth_patients=a.patients)


def _bundle(a) -> int:
    from .bundle import build_bundle

    path = build_bundle(a.run, a.out, with_deps=not a.no_deps)
    print(f"Kaggle bundle written to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mammo_utils", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write the synthetic RSNA-format dataset")
    s.add_argument("--out", required=True)
    s.add_argument("--patients", type=int, default=200)
    s.add_argument("--test-patients", type=int, default=None, help="default: patients // 10")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", default="640x512", help="base image size HxW (machines vary around it)")
    s.add_argument("--cancer-rate", type=float, default=0.2, help="fraction of patients with a cancer breast")
    s.add_argument("--lesion-contrast", type=float, default=0.3, help="mass contrast in attenuation units")
    s.add_argument("--jobs", type=int, default=-1)
    s.set_defaults(func=_synth)

    s = sub.add_parser("preprocess", help="DICOM -> cropped PNGs + manifest (resumable, parallel)")
    s.add_argument("--data", required=True)
    s.add_argument("--split", default="train")
    s.add_argument("--out", default=None)
    s.add_argument("--size", default="1024x512")
    s.add_argument("--jobs", type=int, default=2)
    s.add_argument("--backend", default="auto", choices=["auto", "dicomsdl", "pydicom", "pillow"])
    s.add_argument("--bits", type=int, default=8, choices=[8, 16])
    s.add_argument("--limit", type=int, default=None)
    s.add_argument("--window-index", type=int, default=0)
    s.add_argument("--no-crop", action="store_true")
    s.add_argument("--no-orient", action="store_true")
    s.add_argument("--no-mask", action="store_true", help="keep pixels outside the breast mask")
    s.add_argument("--no-keep-aspect", action="store_true")
    s.add_argument("--full-decode", action="store_true", help="never decode a reduced JPEG 2000 level")
    s.set_defaults(func=_preprocess)

    s = sub.add_parser("check-read", help="decode every DICOM of a dataset and summarize")
    s.add_argument("--data", required=True)
    s.add_argument("--jobs", type=int, default=2)
    s.set_defaults(func=_check_read)

    s = sub.add_parser("folds", help="paired-breast undersampling + patient-grouped folds -> folds.csv")
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--neg-per-pos", type=float, default=None, help="undersample: negatives per cancer patient")
    s.add_argument("--n-splits", type=int, default=5)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_folds)

    s = sub.add_parser("train", help="train one fold")
    s.add_argument("--config", default=None, help="JSON file of TrainConfig fields")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one config field")
    s.set_defaults(func=_train)

    s = sub.add_parser("predict", help="test DICOMs -> submission.csv")
    s.add_argument("--data", required=True)
    s.add_argument("--split", default="test")
    s.add_argument("--runs", nargs="+", required=True)
    s.add_argument("--out", default="submission.csv")
    s.add_argument("--jobs", type=int, default=2)
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--tta", action="store_true", help="average with a horizontal flip")
    s.add_argument("--probabilities", action="store_true", help="write probabilities, not 0/1 at the threshold")
    s.set_defaults(func=_predict)

    s = sub.add_parser("pipeline", help="run notebooks 01-06 with papermill")
    s.add_argument("--data", default="data/synthetic")
    s.add_argument("--run", default="runs/demo")
    s.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"), help="notebook parameter")
    s.add_argument("--from", dest="from_", default=None, help="first notebook number, e.g. 04")
    s.add_argument("--only", default=None, help="run only this notebook number")
    s.add_argument("--patients", type=int, default=200, help="synthetic patients if --data has no train.csv")
    s.set_defaults(func=_pipeline)

    s = sub.add_parser("kaggle-bundle", help="folder to upload as a Kaggle dataset (wheels + run)")
    s.add_argument("--run", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--no-deps", action="store_true", help="skip downloading dependency wheels")
    s.set_defaults(func=_bundle)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

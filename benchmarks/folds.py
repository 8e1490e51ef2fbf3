"""The cost of k folds against one fold, measured in the same run: preprocessing, the holdout and the
folds are made once and reused, so training k folds costs k trainings and not much more.

    .venv/bin/python benchmarks/folds.py [--patients 60] [--folds 3]

Two pipeline runs on the same synthetic data (notebooks 02-05: preprocessing, holdout and folds,
training, evaluation with OOF and holdout): one training fold 0 only, one training every fold. Prints
each notebook's seconds and the ratio (k folds) / (k x one fold); the goal is <= 1.05.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from mammo_utils.synthetic import write_dataset
from mammo_utils.workflow.pipeline import run_pipeline


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=60)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_dataset(data, patients=a.patients, seed=0, progress=False, size=(320, 256))
        fixed = {"image_size": "128x64", "epochs": str(a.epochs), "n_splits": str(a.folds), "workers": "2",
                 "gallery_per_group": "1", "05.n_examples": "1"}
        seconds = {}
        for label, folds in (("one fold", "[0]"), (f"{a.folds} folds", "all")):
            run = Path(tmp) / label.replace(" ", "_")
            assert run_pipeline(data, run, params={**fixed, "folds": folds},
                                notebooks=["02_preprocess", "03_sampling", "04_train", "05_evaluate"],
                                progress=False) == 0
            seconds[label] = json.loads((run / "summary.json").read_text())["seconds"]
            shutil.rmtree(run / "preprocessed")
    one, many = seconds["one fold"], seconds[f"{a.folds} folds"]
    for name in one:
        print(f"{name:14s} one fold {one[name]:7.1f} s   {a.folds} folds {many[name]:7.1f} s")
    total_one, total_many = sum(one.values()), sum(many.values())
    print(f"total: one fold {total_one:.1f} s, {a.folds} folds {total_many:.1f} s; "
          f"ratio ({a.folds} folds) / ({a.folds} x one fold) = {total_many / (a.folds * total_one):.2f} (goal <= 1.05); "
          f"training alone: {many['04_train'] / (a.folds * one['04_train']):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

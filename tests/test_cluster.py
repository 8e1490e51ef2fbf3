"""Training work on a Dask cluster: folds, sweeps and a search as tasks that survive a lost worker.

Real LocalClusters of 2 worker processes run real trainings on the tiny synthetic data. No SLURM or PBS
cluster exists here: their tests check the job script dask-jobqueue generates, without submitting it.
"""
import json
import os
import signal
import threading
import time

import pandas as pd
import pytest

from mammo_utils import parallel, paths
from mammo_utils.errors import UserError
from mammo_utils.learn.config import TrainConfig
from mammo_utils.learn.launch import train_folds
from mammo_utils.learn.sampling import patient_folds
from mammo_utils.prepare.preprocess import PreprocessConfig
from mammo_utils.prepare.runner import run_preprocess

pytest.importorskip("distributed")

TIMING = ["img_per_s", "train_seconds"]  # wall-clock columns of metrics.csv: the only ones allowed to differ


@pytest.fixture(scope="module")
def prepared(tiny_data, tmp_path_factory):
    """Tiny data preprocessed to 64x32 and split into 2 folds."""
    root = tmp_path_factory.mktemp("cluster")
    run_preprocess(tiny_data, "train", root / "png", PreprocessConfig(size=(64, 32)), jobs=1, progress=False)
    patient_folds(pd.read_csv(tiny_data / "train.csv"), n_splits=2, seed=0).to_csv(root / "folds.csv", index=False)
    return root


def fold_cfg(prepared, **kw):
    base = dict(preprocessed=str(prepared / "png"), folds=str(prepared / "folds.csv"), model="resnet10t", epochs=2,
                batch_size=8, lr=1e-3, workers=2, max_steps_per_epoch=2, tracking="none")
    return TrainConfig(**{**base, **kw})


def history(run, k):
    return pd.read_csv(paths.train_dir(run, k) / paths.METRICS).drop(columns=TIMING)


def test_folds_on_two_workers_match_the_sequential_folds(prepared, tmp_path):
    cfg = fold_cfg(prepared)
    seq = train_folds(cfg, tmp_path / "seq", [0, 1], progress=False)
    par = train_folds(cfg, tmp_path / "par", [0, 1], scheduler="local:2")
    for k in (0, 1):
        pd.testing.assert_frame_equal(history(tmp_path / "seq", k), history(tmp_path / "par", k))
        pd.testing.assert_frame_equal(pd.read_csv(paths.train_dir(tmp_path / "seq", k) / paths.VAL_PREDICTIONS),
                                      pd.read_csv(paths.train_dir(tmp_path / "par", k) / paths.VAL_PREDICTIONS))
    assert [r["best_metric"] for r in seq] == [r["best_metric"] for r in par]
    assert [r["run_dir"] for r in par] == [str(paths.train_dir(tmp_path / "par", k)) for k in (0, 1)]

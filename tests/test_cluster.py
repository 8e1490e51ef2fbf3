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


@pytest.fixture
def local_cluster():
    """A LocalCluster of 2 worker processes that the test can reach (and kill workers of)."""
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.worker.daemon": False}):  # also for the worker the nanny restarts
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None)
        client = Client(cluster)
        yield cluster, client
        client.close()
        cluster.close()


def kill_worker_of(client, key_prefix: str) -> int | None:
    """SIGKILL the worker process executing the task whose key starts with ``key_prefix``: a node lost."""
    for address, keys in client.processing().items():
        if any(str(k).startswith(key_prefix) for k in keys):
            pid = client.run(os.getpid, workers=[address])[address]
            os.kill(pid, signal.SIGKILL)
            return pid
    return None


def test_a_fold_whose_worker_dies_mid_training_resumes_from_last_pt(prepared, tmp_path, local_cluster):
    cluster, client = local_cluster
    run = tmp_path / "run"
    metrics_csv = paths.train_dir(run, 1) / paths.METRICS
    seen = {}

    def kill_after_first_epoch():
        deadline = time.time() + 300
        while time.time() < deadline and "pid" not in seen:
            if (metrics_csv.parent / paths.LAST).exists():  # written after metrics.csv, at the end of the epoch
                first = pd.read_csv(metrics_csv)
                if len(first) == 1:  # epoch 1 saved in last.pt, epoch 2 under way
                    seen["pid"] = kill_worker_of(client, "fold1-")
                    seen["first"] = first
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_after_first_epoch, daemon=True)
    watcher.start()
    results = train_folds(fold_cfg(prepared, epochs=3, workers=0), run, [0, 1], scheduler=cluster.scheduler_address)
    watcher.join()
    assert seen.get("pid"), "the worker training fold 1 was never killed"
    after = pd.read_csv(metrics_csv)
    assert after.epoch.tolist() == [1, 2, 3]
    # epoch 1 is the row written before the kill, timings included: continued from last.pt, not retrained
    pd.testing.assert_frame_equal(after.iloc[:1], seen["first"])
    assert not list(run.glob("train/fold*/previous")), "a fold was restarted and its outputs set aside"
    assert [r["epochs_run"] for r in results] == [3, 3]
    assert pd.read_csv(paths.train_dir(run, 0) / paths.METRICS).epoch.tolist() == [1, 2, 3]

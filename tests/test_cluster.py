"""Training work on a Dask cluster: folds, sweeps and a search as tasks that survive a lost worker.

Real LocalClusters of 2 worker processes run real trainings on the tiny synthetic data. No SLURM or PBS
cluster exists here: their tests check the job script dask-jobqueue generates, without submitting it.
"""
import json
import os
import shutil
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

pytest.importorskip("distributed")

TIMING = ["img_per_s", "train_seconds"]  # wall-clock columns of metrics.csv: the only ones allowed to differ


@pytest.fixture(scope="module")
def prepared(tiny_data, tiny_png, tmp_path_factory):
    """Tiny data preprocessed to 64x32 and split into 2 folds."""
    root = tmp_path_factory.mktemp("cluster")
    shutil.copytree(tiny_png, root / "png")
    patient_folds(pd.read_csv(tiny_data / "train.csv"), n_splits=2, seed=0).to_csv(root / "folds.csv", index=False)
    return root


def fold_cfg(prepared, **kw):
    base = dict(preprocessed=str(prepared / "png"), folds=str(prepared / "folds.csv"), model="resnet10t", epochs=2,
                batch_size=8, lr=1e-3, workers=2, max_steps_per_epoch=2, tracking="none")
    return TrainConfig(**{**base, **kw})


def history(run, k):
    return pd.read_csv(paths.train_dir(run, k) / paths.METRICS).drop(columns=TIMING)


def test_a_failed_fold_is_named_and_the_others_are_kept(prepared, tmp_path):
    """On a cluster the library starts itself (``local:1``: the two-worker cluster is the killed-worker
    test's), where fold 0 loads its images with DataLoader worker processes inside a Dask worker."""
    cfg = fold_cfg(prepared, epochs=1)
    with pytest.raises(UserError, match=r"1 of 2 fold\(s\) failed.*\n  fold5: UserError: fold 5 is not in"):
        train_folds(cfg, tmp_path / "run", [5, 0], scheduler="local:1")
    assert pd.read_csv(paths.train_dir(tmp_path / "run", 0) / paths.METRICS).epoch.tolist() == [1]  # kept


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


def kill_after_first_epoch(client, fold, key_prefix: str, timeout: float) -> tuple[threading.Thread, dict]:
    """Watch ``fold`` from a thread and kill the worker training it once epoch 1 is saved in last.pt and
    epoch 2 is under way; the dict gets the killed ``pid`` and the ``first`` metrics row seen before it."""
    seen = {}

    def watch():
        deadline = time.time() + timeout
        while time.time() < deadline and "pid" not in seen:
            if (fold / paths.LAST).exists():  # written after metrics.csv, at the end of the epoch
                first = pd.read_csv(fold / paths.METRICS)
                if len(first) == 1:
                    seen["pid"] = kill_worker_of(client, key_prefix)
                    seen["first"] = first
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher, seen


@pytest.mark.slow
def test_folds_on_a_cluster_whose_worker_dies_resume_and_match_the_sequential_folds(prepared, tmp_path,
                                                                                      local_cluster):
    """2 folds as tasks on a 2-process LocalCluster; the worker training fold 1 is killed after its first
    epoch. The fold goes on from last.pt on another worker, and both folds equal the folds trained one
    after another in this process (DataLoader workers in both): metrics, validation predictions, results."""
    cluster, client = local_cluster
    cfg = fold_cfg(prepared, epochs=3)  # 2 DataLoader workers inside each Dask worker
    seq = train_folds(cfg, tmp_path / "seq", [0, 1], progress=False)
    run = tmp_path / "run"
    metrics_csv = paths.train_dir(run, 1) / paths.METRICS
    watcher, seen = kill_after_first_epoch(client, metrics_csv.parent, "fold1-", timeout=300)
    par = train_folds(cfg, run, [0, 1], scheduler=cluster.scheduler_address)
    watcher.join()
    assert seen.get("pid"), "the worker training fold 1 was never killed"
    after = pd.read_csv(metrics_csv)
    assert after.epoch.tolist() == [1, 2, 3]
    # epoch 1 is the row written before the kill, timings included: continued from last.pt, not retrained
    pd.testing.assert_frame_equal(after.iloc[:1], seen["first"])
    assert not list(run.glob("train/fold*/previous")), "a fold was restarted and its outputs set aside"
    assert [r["epochs_run"] for r in par] == [3, 3]
    for k in (0, 1):
        pd.testing.assert_frame_equal(history(tmp_path / "seq", k), history(run, k))
        pd.testing.assert_frame_equal(pd.read_csv(paths.train_dir(tmp_path / "seq", k) / paths.VAL_PREDICTIONS),
                                      pd.read_csv(paths.train_dir(run, k) / paths.VAL_PREDICTIONS))
    assert [r["best_metric"] for r in seq] == [r["best_metric"] for r in par]
    assert [r["run_dir"] for r in par] == [str(paths.train_dir(run, k)) for k in (0, 1)]


def test_slurm_and_pbs_job_scripts_ask_for_what_the_user_wrote(tmp_path):
    """No SLURM or PBS cluster runs here: this checks the job script dask-jobqueue generates (nothing is
    submitted) against the resources file."""
    from mammo_utils.workflow.cluster import job_script

    spec = tmp_path / "job.yaml"
    spec.write_text("cores: 6\nmemory: 24GiB\ngpus: 2\nwalltime: '02:30:00'\nqueue: gpu\naccount: rsna\njobs: 3\n")
    slurm = job_script(f"slurm:{spec}")
    for line in ("#SBATCH -p gpu", "#SBATCH -A rsna", "#SBATCH --cpus-per-task=6", "#SBATCH --mem=24G",
                 "#SBATCH -t 02:30:00", "#SBATCH --gpus=2", "export DASK_DISTRIBUTED__WORKER__DAEMON=False"):
        assert line in slurm.splitlines(), (line, slurm)
    worker = next(l for l in slurm.splitlines() if "dask_worker" in l)
    assert "--resources GPU=2" in worker and "--nthreads 2" in worker  # one task per GPU
    pbs = job_script(f"pbs:{spec}")
    for line in ("#PBS -q gpu", "#PBS -A rsna", "#PBS -l select=1:ncpus=6:mem=24GB:ngpus=2", "#PBS -l walltime=02:30:00"):
        assert line in pbs.splitlines(), (line, pbs)
    spec.write_text("cores: 6\ngpu: 2\n")
    with pytest.raises(UserError, match=r"unknown key\(s\) \['gpu'\]"):
        job_script(f"slurm:{spec}")
    with pytest.raises(UserError, match="slurm: and pbs:"):
        job_script("local:2")
    with pytest.raises(UserError, match="local:N, tcp://HOST:PORT, slurm"):
        with parallel.training_client("sge:"):
            pass


def test_a_bad_scheduler_stops_a_command_in_one_line_before_any_work(tmp_path, capsys):
    from mammo_utils.cli import main

    grid = tmp_path / "grid.yaml"
    grid.write_text("04.loss: [bce]\n")
    for bad, why in (("local:0", "scheduler must be local:N"), ("tcp:host", "scheduler must be"),
                     (f"slurm:{tmp_path / 'none.yaml'}", "job resources file .*none.yaml not found")):
        for argv in (["sweep", "--data", str(tmp_path / "data"), "--run", str(tmp_path / "sweep"), "--grid", str(grid)],
                     ["tune", "--data", str(tmp_path / "data"), "--run", str(tmp_path / "tune"), "--space", str(grid)],
                     ["pipeline", "--data", str(tmp_path / "data"), "--run", str(tmp_path / "run")]):
            assert main(argv + ["--scheduler", bad]) == 2
            err = [line for line in capsys.readouterr().err.splitlines() if " INFO " not in line]  # papermill's
            assert len(err) == 1 and err[0].startswith("error: ") and __import__("re").search(why, err[0]), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.yaml"]  # nothing written, no data made


def test_the_holdout_guard_refuses_a_holdout_file_and_nothing_else(tmp_path):
    from mammo_utils.workflow.tune import HoldoutTouched, holdout_guard

    (tmp_path / "base").mkdir()
    for name in ("holdout.csv", "folds.csv"):
        (tmp_path / "base" / name).write_text("patient_id\n1\n")
    with holdout_guard(tmp_path):
        assert pd.read_csv(tmp_path / "base" / "folds.csv").patient_id.tolist() == [1]
        with pytest.raises(HoldoutTouched, match="holdout stays locked"):
            pd.read_csv(tmp_path / "base" / "holdout.csv")
        with pytest.raises(HoldoutTouched):
            open(tmp_path / "base" / ".." / "base" / "holdout.csv").close()
    assert pd.read_csv(tmp_path / "base" / "holdout.csv").patient_id.tolist() == [1]  # unlocked afterwards


def test_the_search_base_preprocesses_only_what_training_reads(tiny_data, tiny_png, tmp_path):
    from mammo_utils.workflow.tune import base_notebooks

    tune = tmp_path / "tune"
    assert base_notebooks(tiny_data, tune, {}) == ["02_preprocess", "03_sampling"]
    shared = {"preprocessed_dir": str(tmp_path / "made_here")}  # 02 writes where 04 reads
    assert base_notebooks(tiny_data, tune, shared) == ["02_preprocess", "03_sampling"]
    assert base_notebooks(tiny_data, tune, {"04.preprocessed_dir": str(tiny_png)}) == ["03_sampling"]
    with pytest.raises(UserError, match=r"training would read .*missing \(notebook 04's preprocessed_dir\), which holds no"):
        base_notebooks(tiny_data, tune, {"04.preprocessed_dir": str(tmp_path / "missing")})


@pytest.fixture(scope="module")
def blob_png(prepared, tmp_path_factory):
    """The tiny 64x32 images with a bright block on every cancer image: a signal a network picks up in two
    steps, so a search has a good region (lr 3e-3) beside a bad one (lr 1.0 diverges: chance AUC, 0.5)."""
    import shutil

    import cv2
    import numpy as np

    out = tmp_path_factory.mktemp("blob") / "png"
    shutil.copytree(prepared / "png", out)
    for r in pd.read_csv(out / "manifest.csv").itertuples():
        if r.cancer:
            img = cv2.imread(str(out / r.path), cv2.IMREAD_UNCHANGED)
            img[20:44, 8:24] = np.iinfo(img.dtype).max
            cv2.imwrite(str(out / r.path), img)
    return out


@pytest.mark.slow
def test_tune_resumes_prunes_and_opens_the_holdout_only_for_the_final_fit(tiny_data, blob_png, tmp_path, monkeypatch):
    import shutil
    import sys

    import optuna
    from mlflow import MlflowClient

    from mammo_utils.workflow.tune import run_tune, storage

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    opened = []  # (time, path) of every holdout file this process opens
    sys.addaudithook(lambda event, args: opened.append((time.time(), os.fsdecode(args[0])))
                     if event == "open" and isinstance(args[0], (str, bytes, os.PathLike))
                     and "holdout" in os.path.basename(os.fsdecode(args[0])) and str(tmp_path) in os.fsdecode(args[0])
                     else None)
    space = tmp_path / "space.yaml"
    space.write_text("lr: [3.0e-3, 1.0]\n")  # 1.0: a region that diverges to constant predictions
    fixed = {"image_size": "64x32", "epochs": "2", "max_steps_per_epoch": "2", "workers": "2", "n_splits": "2",
             "bootstrap": "20", "05.n_examples": "1", "04.preprocessed_dir": str(blob_png), "model": "resnet10t"}
    tune = tmp_path / "tune"
    kw = dict(params=fixed, folds=[0], startup_trials=1, seed=6, progress=False)  # seed 6 draws good, good, bad
    assert run_tune(data, tune, space, trials=3, final=False, **kw) == 0
    made = sorted(p.name for p in (tune / "base" / "notebooks").glob("*.ipynb"))
    assert made == ["03_sampling.ipynb"]  # the trials train on blob_png: notebook 02 would make unread images
    first = json.loads((tune / "tune.json").read_text())
    assert [t["number"] for t in first["trials"]] == [0, 1, 2] and "final_started" not in first
    stamps = {t["folder"]: (tune / "search" / "trials" / t["folder"] / "fold0" / paths.METRICS).stat().st_mtime
              for t in first["trials"] if t["state"] == "COMPLETE"}
    assert [t["state"] for t in first["trials"]] == ["COMPLETE", "COMPLETE", "PRUNED"]
    # an interrupt: a trial asked for and never told (its process was killed)
    study = optuna.load_study(study_name="tune", storage=storage(tune))
    study.enqueue_trial({"lr": 1.0})
    cut = study.ask()
    cut.suggest_categorical("lr", [3.0e-3, 1.0])
    cut.set_user_attr("folder", "trial003")
    assert run_tune(data, tune, space, trials=5, **kw) == 0
    final = json.loads((tune / "tune.json").read_text())
    states = {t["number"]: t["state"] for t in final["trials"]}
    assert [t["number"] for t in final["trials"]] == [0, 1, 2, 3, 4] and states[3] == "FAIL"
    assert final["trials"][4]["folder"] == "trial003" and final["trials"][4]["params"] == cut.params  # run again
    assert [t["value"] for t in final["trials"][:3]] == [t["value"] for t in first["trials"]]  # not redone
    for folder, stamp in stamps.items():
        assert (tune / "search" / "trials" / folder / "fold0" / paths.METRICS).stat().st_mtime == stamp
    pruned = [t for t in final["trials"] if t["state"] == "PRUNED"]
    assert [t["number"] for t in pruned] == [2, 4], final["trials"]  # the bad region, stopped after epoch 1
    assert all(t["params"]["lr"] == 1.0 and t["epochs_reported"] == 1 for t in pruned)
    assert final["best"]["params"]["lr"] == 3.0e-3 and final["holdout"]["auc"] is not None
    assert final["holdout_looks"] == [{"lr": 3.0e-3}] and first["holdout_looks"] == []  # judged once
    # the holdout: untouched by the search (no notebook 05 there, no holdout file beside its folds, none
    # opened in this process, where the trials ran), opened for the final fit
    assert not list((tune / "search").rglob("05_*")) and not list((tune / "search").glob("holdout*"))
    before = [p for t, p in opened if t < final["final_started"] and not os.path.basename(p).startswith("holdout.json")]
    assert before == [], before
    assert [p for t, p in opened if t >= final["final_started"]]
    assert (tune / "best" / "holdout_predictions.csv").exists()
    # every trial an MLflow child run of the study's run; pruned ones ended KILLED
    client = MlflowClient(store)
    found = client.search_runs([client.get_experiment_by_name("mammo-workbook").experiment_id])
    parents = [r for r in found if r.data.tags.get("kind") == "tune"]
    children = [r for r in found if r.data.tags.get("kind") == "trial"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} <= {p.info.run_id for p in parents}
    assert sorted(r.info.run_name for r in children) == ["trial0", "trial1", "trial2", "trial4"] and \
        {r.info.status for r in children if r.data.tags.get("state") == "PRUNED"} == {"KILLED"}


@pytest.mark.slow
@pytest.mark.long  # two whole sweeps through papermill (about 10 minutes on 2 cores): `make test-long`
def test_sweep_on_two_workers_with_a_worker_killed_gives_the_sequential_comparison(tiny_data, tmp_path, local_cluster,
                                                                                    monkeypatch):
    """2 combinations x 2 folds: every fold a task on a 2-process LocalCluster, the worker training one of
    them killed after its first epoch; comparison.csv is the sequential sweep's, seed for seed."""
    import shutil

    from mammo_utils.workflow.sweep import run_sweep

    cluster, client = local_cluster
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    grid = tmp_path / "grid.yaml"
    grid.write_text("04.loss: [focal, bce]\n")
    fixed = {"image_size": "64x32", "epochs": "2", "max_steps_per_epoch": "2", "workers": "2", "n_splits": "2",
             "bootstrap": "20", "05.n_examples": "1", "06.jobs": "1", "model": "resnet10t"}
    assert run_sweep(data, tmp_path / "seq", grid, seeds=[0], params=fixed, progress=False) == 0

    fold = paths.train_dir(tmp_path / "par" / "loss-bce_seed0", 1)
    watcher, seen = kill_after_first_epoch(client, fold, "loss-bce_seed0-fold1-", timeout=900)
    assert run_sweep(data, tmp_path / "par", grid, seeds=[0], params=fixed, progress=False,
                     scheduler=cluster.scheduler_address) == 0
    watcher.join()
    assert seen.get("pid"), "the worker training loss-bce_seed0 fold 1 was never killed"
    after = pd.read_csv(fold / paths.METRICS)
    assert after.epoch.tolist() == [1, 2]
    pd.testing.assert_frame_equal(after.iloc[:1], seen["first"])  # resumed from last.pt, not retrained
    seq, par = (pd.read_csv(tmp_path / s / "comparison.csv") for s in ("seq", "par"))
    timing = [c for c in seq.columns if "minutes" in c]
    assert list(seq.combination) == ["loss-focal", "loss-bce", "loss-focal + stacking", "loss-bce + stacking"]
    pd.testing.assert_frame_equal(seq.drop(columns=timing), par.drop(columns=timing))
    for run in ("loss-focal_seed0", "loss-bce_seed0"):  # the same predictions, image for image
        pd.testing.assert_frame_equal(pd.read_csv(paths.holdout_predictions_csv(tmp_path / "seq" / run)),
                                      pd.read_csv(paths.holdout_predictions_csv(tmp_path / "par" / run)))
        assert (tmp_path / "par" / run / "notebooks" / "04_train_fold0.ipynb").exists()

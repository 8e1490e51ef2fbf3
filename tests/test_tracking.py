"""MLflow tracking: what a run records (read back with MlflowClient), a real tracking server, a server
that goes away mid-run, and the MLflow UI in a real browser."""
import json
import os
import shutil
import signal
import sys
import time

import pandas as pd
import pytest

from mammo_utils import paths, tracking
from mammo_utils.learn import train as T
from mammo_utils.learn.checkpoint import load_checkpoint
from mammo_utils.learn.config import TrainConfig
from mammo_utils.learn.sampling import make_folds

mlflow = pytest.importorskip("mlflow")
from conftest import CHROMEDRIVER, CHROMIUM, free_port, start_server, wait_for  # noqa: E402
from mlflow import MlflowClient  # noqa: E402


@pytest.fixture(scope="module")
def prepared(tiny_data, tiny_png, tmp_path_factory):
    root = tmp_path_factory.mktemp("tracked")
    shutil.copytree(tiny_png, root / "png")
    make_folds(pd.read_csv(tiny_data / "train.csv"), n_splits=3).to_csv(root / "folds.csv", index=False)
    return root


def cfg(prepared, run, **kw):
    base = dict(run_dir=str(run), preprocessed=str(prepared / "png"), folds=str(prepared / "folds.csv"),
                model="resnet10t", epochs=2, batch_size=8, workers=0, max_steps_per_epoch=1)
    return TrainConfig(**{**base, **kw})


def runs_of(uri):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(tracking.EXPERIMENT)
    return client, client.search_runs([exp.experiment_id]) if exp else []


def test_a_fold_records_params_epochs_tags_and_artifacts_and_resumes_its_run(prepared, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    parent = tracking.start("mlflow", tmp_path / "store", "a pipeline", uri)
    monkeypatch.setenv(tracking.RUN_ID_ENV, parent.run_id)
    run = tmp_path / "run" / "fold0"
    T.train(cfg(prepared, run, tracking_uri=uri, ema_decay=0.9), progress=False)
    client, found = runs_of(uri)
    fold = [r for r in found if r.info.run_name == "fold0"][0]
    assert fold.data.tags["mlflow.parentRunId"] == parent.run_id  # nested under the pipeline's run
    assert fold.data.params["train.lr"] == "0.001" and fold.data.params["train.ema_decay"] == "0.9"
    assert fold.data.params["preprocess.size"] in ("(64, 32)", "[64, 32]") and fold.data.params["data_fingerprint"]
    assert fold.data.tags["world_size"] == "1" and fold.data.tags["git_commit"] and fold.data.tags["device"] == "cpu"
    for metric in ("train_loss", "val_auc", "val_pf1", "val_pr_auc", "lr", "nonfinite_skipped", "scaler_skipped",
                   "scale"):
        assert [m.step for m in client.get_metric_history(fold.info.run_id, metric)] == [1, 2], metric
    assert {a.path for a in client.list_artifacts(fold.info.run_id)} >= {"config.json", "metrics.csv",
                                                                         "val_predictions.csv"}
    assert not [a for a in client.list_artifacts(fold.info.run_id) if a.path == "checkpoints"]  # only when asked
    assert fold.info.status == "FINISHED"
    # a resumed training continues the same MLflow run
    T.train(cfg(prepared, run, tracking_uri=uri, ema_decay=0.9, epochs=3), progress=False)
    client, found = runs_of(uri)
    assert len([r for r in found if r.info.run_name == "fold0"]) == 1
    assert [m.step for m in client.get_metric_history(fold.info.run_id, "val_auc")] == [1, 2, 3]
    # tracking="none" records nothing
    T.train(cfg(prepared, tmp_path / "quiet", tracking_uri=uri, tracking="none", epochs=1), progress=False)
    assert len(runs_of(uri)[1]) == len(found)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 with its own store; yields (url, process). Started once for
    the module (it takes seconds); the last test of the module stops it on purpose."""
    tmp_path = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server([shutil.which("mlflow") or os.path.join(os.path.dirname(sys.executable), "mlflow"),
                         "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                         "--artifacts-destination", str(tmp_path / "server-artifacts")],
                        f"{url}/health", tmp_path / "server.log", "mlflow server")
    yield url, proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_tracking_none_and_a_bad_store_never_stop_a_run(prepared, tmp_path, capsys):
    assert not tracking.start("none", tmp_path, "x").active
    with pytest.raises(Exception, match="tracking must be one of"):
        tracking.start("wandb", tmp_path, "x")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the store's folder should be")
    result = T.train(cfg(prepared, tmp_path / "run", tracking_uri=f"sqlite:///{blocked}/sub/mlflow.db", epochs=1),
                     progress=False)
    assert result["epochs_run"] == 1 and "MLflow tracking stopped" in capsys.readouterr().out


def statuses(*run_ids):
    """{run id: status} read back from the session's store (MLFLOW_TRACKING_URI, tests/conftest.py)."""
    ids = ", ".join(f"'{r}'" for r in run_ids)
    found = mlflow.search_runs(experiment_names=[tracking.EXPERIMENT], output_format="list",
                               filter_string=f"attributes.run_id IN ({ids})")
    return {r.info.run_id: r.info.status for r in found}


def test_other_parameters_or_a_copied_folder_get_a_new_pipeline_run(tmp_path):
    """tracking.json reopens the folder's earlier MLflow run only for the same folder and parameters; other
    parameters (MLflow would refuse to change them) or a copy get a new run, tagged with the earlier id.
    Every run ends FINISHED or KILLED: none is left RUNNING."""
    from mammo_utils.workflow.pipeline import tracked

    run = tmp_path / "run"
    run.mkdir()
    plan_a = {"04_train": {"run_dir": str(run), "lr": 0.001}, "03_sampling": {"holdout_seed": 0}}
    plan_b = {**plan_a, "03_sampling": {"holdout_seed": 1}}

    def pipeline(folder, plan, fail=None):
        with tracked(folder, tmp_path, {}, plan) as tracker:
            tracker.params({"holdout_seed": plan["03_sampling"]["holdout_seed"]})
            if fail:
                raise fail
            tracker.end("FINISHED")
        return tracker.run_id

    first = pipeline(run, plan_a)
    assert pipeline(run, plan_a) == first  # a rerun with the same parameters continues it
    second = pipeline(run, plan_b)
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    third = pipeline(copy, plan_b)
    with pytest.raises(KeyboardInterrupt):
        pipeline(copy, plan_b, KeyboardInterrupt())
    assert len({first, second, third}) == 3
    client = MlflowClient()
    assert client.get_run(second).data.tags[tracking.PREVIOUS_TAG] == first
    assert client.get_run(third).data.tags[tracking.PREVIOUS_TAG] == second
    assert client.get_run(second).data.params["holdout_seed"] == "1"  # the new parameter, recorded
    assert statuses(first, second, third) == {first: "FINISHED", second: "FINISHED", third: "KILLED"}


def test_an_untracked_rerun_breaks_the_folders_link_to_its_mlflow_run(tmp_path):
    """A rerun with tracking none once left tracking.json naming the earlier MLflow run, which the next
    tracked rerun then continued as if the folder had not changed in between."""
    from mammo_utils.workflow.pipeline import tracked

    run = tmp_path / "run"
    run.mkdir()
    plan = {"04_train": {"run_dir": str(run), "lr": 0.001}}
    untracked = {"04_train": {**plan["04_train"], "tracking": "none"}}
    with tracked(run, tmp_path, {}, plan) as tracker:
        tracker.end("FINISHED")
    first = tracker.run_id
    with tracked(run, tmp_path, {}, untracked) as tracker:
        assert not tracker.active
    recorded = json.loads(paths.tracking_json(run).read_text())
    assert recorded["run_id"] is None and recorded[tracking.PREVIOUS_TAG] == first
    with tracked(run, tmp_path, {}, plan) as tracker:  # the first run's parameters again: a new run all the same
        tracker.end("FINISHED")
    assert tracker.run_id != first and MlflowClient().get_run(tracker.run_id).data.tags[tracking.PREVIOUS_TAG] == first
    assert json.loads(paths.tracking_json(run).read_text())["run_id"] == tracker.run_id
    second = tracker.run_id
    MlflowClient().delete_run(second)  # deleted in the UI: the rerun gets a new run, still tracked
    with tracked(run, tmp_path, {}, plan) as tracker:
        tracker.end("FINISHED")
    assert tracker.active and tracker.run_id != second
    assert MlflowClient().get_run(tracker.run_id).data.tags[tracking.PREVIOUS_TAG] == second
    paths.tracking_json(run).write_text("{oops")  # damaged: ignored with a warning, a new run
    with tracked(run, tmp_path, {}, plan) as again:
        again.end("FINISHED")
    assert again.active and again.run_id not in (first, second, tracker.run_id)


def test_a_copied_fold_resumes_into_a_new_run_and_an_interrupt_ends_it_killed(prepared, tmp_path, monkeypatch):
    run, copy = tmp_path / "run" / "fold0", tmp_path / "copy" / "fold0"
    T.train(cfg(prepared, run, epochs=1), progress=False)
    earlier = load_checkpoint(run / "last.pt")["mlflow_run_id"]
    shutil.copytree(run.parent, copy.parent)
    T.train(cfg(prepared, copy, epochs=2), progress=False)  # resumes (same settings), in a new folder
    later = load_checkpoint(copy / "last.pt")["mlflow_run_id"]
    assert later != earlier and MlflowClient().get_run(later).data.tags[tracking.PREVIOUS_TAG] == earlier
    assert pd.read_csv(copy / "metrics.csv").epoch.tolist() == [1, 2]

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "validate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg(prepared, tmp_path / "cut" / "fold0", epochs=1), progress=False)
    client, found = runs_of(os.environ["MLFLOW_TRACKING_URI"])
    cut = [r for r in found if r.data.tags.get("fold") == "0" and r.info.run_id not in (earlier, later)
           and r.info.start_time >= client.get_run(later).info.start_time]
    assert statuses(earlier, later, cut[0].info.run_id) == {earlier: "FINISHED", later: "FINISHED",
                                                             cut[0].info.run_id: "KILLED"}


def test_a_stopped_tracker_marks_its_run_failed_in_one_line(tmp_path, capsys):
    tracker = tracking.start("mlflow", tmp_path, "refused")
    tracker.params({"lr": 0.001})
    tracker.params({"lr": 0.002})  # MLflow refuses to change a parameter: tracking stops
    tracker.metrics({"x": 1.0})
    assert not tracker.active and statuses(tracker.run_id) == {tracker.run_id: "FAILED"}
    assert capsys.readouterr().out.count("MLflow tracking stopped") == 1
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the store's folder should be")
    pipeline = tracking.start("mlflow", tmp_path, "pipeline", f"sqlite:///{blocked}/sub/mlflow.db")
    with tracking.passed_on(pipeline):  # what the notebooks' kernels inherit from a pipeline whose tracking stopped
        fold = tracking.start("mlflow", tmp_path, "fold0", f"sqlite:///{blocked}/sub/mlflow.db")
    assert not pipeline.active and not fold.active
    assert capsys.readouterr().out.count("MLflow tracking stopped") == 1  # one line, not one per process


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="chromium/chromedriver missing: `make setup` installs them")
def test_the_mlflow_ui_shows_a_recorded_sweep(tmp_path, server, chrome):
    """Headless Chromium on the MLflow UI of a recorded sweep (a parent run, two combinations with
    per-epoch validation AUC): the runs are listed and a run's metric chart is drawn."""
    from selenium.webdriver.common.by import By

    driver, (url, _) = chrome, server
    sweep = tracking.start("mlflow", tmp_path, "sweep_demo", url, tags={"kind": "sweep"})
    for name, slope in (("balanced_seed0", 0.1), ("random_seed0", 0.05)):
        child = sweep.child(name)
        for epoch in (1, 2, 3):
            child.metrics({"val_auc": 0.5 + slope * epoch, "train_loss": 1 / epoch}, step=epoch)
        child.end()
    sweep.end()
    client = MlflowClient(url)
    exp = client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id
    run = [r for r in client.search_runs([exp]) if r.info.run_name == "balanced_seed0"][0]

    def page():
        return driver.find_element(By.TAG_NAME, "body").text

    driver.get(f"{url}/#/experiments/{exp}/runs")
    wait_for(lambda: "sweep_demo" in page() and "3 matching runs" in page(),  # the children fold under it
             what="the sweep's runs listed")
    driver.save_screenshot(str(tmp_path / "runs.png"))
    driver.get(f"{url}/#/experiments/{exp}/runs/{run.info.run_id}/model-metrics")
    wait_for(lambda: "balanced_seed0" in page() and "val_auc" in page() and "Step" in page()
             and len(driver.find_elements(By.CSS_SELECTOR, "svg")) > 10, what="the val_auc chart")
    driver.save_screenshot(str(tmp_path / "chart.png"))


def test_a_real_server_records_a_run_and_a_server_that_goes_away_stops_nothing(prepared, tmp_path, server,
                                                                              monkeypatch, capsys):
    url, proc = server
    T.train(cfg(prepared, tmp_path / "served", tracking_uri=url, epochs=1), progress=False)
    client, found = runs_of(url)
    run = [r for r in found if r.info.run_name == "fold0"][0]
    assert run.data.params["train.epochs"] == "1" and client.get_metric_history(run.info.run_id, "val_auc")
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"config.json", "metrics.csv"}

    real_validate = T.validate
    calls = []

    def validate_then_stop_the_server(*args, **kwargs):
        out = real_validate(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return out

    monkeypatch.setattr(T, "validate", validate_then_stop_the_server)
    t0 = time.time()
    result = T.train(cfg(prepared, tmp_path / "orphan", tracking_uri=url, epochs=3), progress=False)
    out = capsys.readouterr().out
    assert "MLflow tracking stopped" in out and out.count("MLflow tracking stopped") == 1
    assert result["epochs_run"] == 3 and len(pd.read_csv(tmp_path / "orphan" / "metrics.csv")) == 3
    assert (tmp_path / "orphan" / "best.pt").exists() and time.time() - t0 < 120

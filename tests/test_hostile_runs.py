"""Run folders and schedulers as a careless user meets them: folders named like their parts, batch
schedulers on a machine that cannot submit."""
import pytest

from mammo_utils import parallel
from mammo_utils.errors import CheckpointError, UserError


@pytest.mark.parametrize("kind, submit", [("slurm", "sbatch"), ("pbs", "qsub")])
def test_a_batch_scheduler_without_its_submit_command_stops_in_one_line(tmp_path, monkeypatch, kind, submit):
    """Without sbatch (qsub) the cluster object is made, no job is ever submitted and the fold tasks wait
    for workers forever: refused before any work, naming the command."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match=f"{kind}: scheduler submits its workers with {submit}, which is not on PATH"):
        parallel.check_scheduler(f"{kind}:")
    fake = tmp_path / submit
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    parallel.check_scheduler(f"{kind}:")  # a login node: accepted


def test_a_run_folder_named_train_is_read_as_a_run(tmp_path):
    """``--run runs/train`` holds ``runs/train/train/fold0``: it is the run, not the fold folder of a run
    in ``runs/`` (its folds, holdout and tracking were looked for one level up: 'no best.pt, train first')."""
    from mammo_utils import paths
    from mammo_utils.learn.runs import Run

    run = tmp_path / "train"
    fold = paths.train_dir(run, 0)
    fold.mkdir(parents=True)
    (fold / paths.BEST).write_bytes(b"checkpoint")
    paths.tracking_json(run).write_text('{"run_id": "abc"}')
    found = Run(run)
    assert (found.root, found.fold_numbers(), found.tracking()) == (run, [0], {"run_id": "abc"})
    assert Run(paths.train_root(run)).root == run  # its folder of folds still names the run


@pytest.mark.parametrize("kind", ["sweep", "tune"])
def test_a_sweeps_or_searchs_tracking_run_ends_killed_failed_or_finished(kind, tmp_path, monkeypatch):
    """The parent run of a sweep or a search is never left RUNNING: Ctrl-C marks it KILLED, an error FAILED,
    else FINISHED (a search interrupted once ended FINISHED)."""
    from contextlib import nullcontext

    from mlflow import MlflowClient

    from mammo_utils.workflow.sweep import sweep_tracker
    from mammo_utils.workflow.tune import study_tracker

    parent = {"sweep": sweep_tracker, "tune": study_tracker}[kind]
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ids = {}
    for name, raised in (("stopped", KeyboardInterrupt), ("broken", ValueError), ("done", None)):
        store = {"04.tracking_uri": f"sqlite:///{tmp_path}/m.db"}
        with pytest.raises(raised) if raised else nullcontext(), parent(tmp_path / name, tmp_path, store) as t:
            ids[name] = t.run_id
            if raised:
                raise raised
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    assert {n: client.get_run(i).info.status for n, i in ids.items()} == \
        {"stopped": "KILLED", "broken": "FAILED", "done": "FINISHED"}


def test_a_kernel_killed_by_the_system_fails_the_pipeline_in_one_line(tiny_data, tmp_path, monkeypatch, capsys):
    """A notebook's kernel killed outright (the kernel OOM killer, a crash in native code) stopped the
    pipeline with nbclient's DeadKernelError traceback: one line naming the notebook instead, exit 1."""
    import nbformat

    from mammo_utils.workflow import pipeline

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('data_dir = "data"  # the data\nrun_dir = "run"  # the run\n'
                                       'tracking = "none"  # untracked')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, notebooks / "04_train.ipynb")
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", notebooks)
    assert pipeline.run_pipeline(tiny_data, tmp_path / "run", notebooks=["04_train"], progress=False) == 1
    err = capsys.readouterr().err
    assert "FAILED in 04_train its kernel died" in err and "Traceback" not in err, err


def test_a_scheduler_nobody_listens_at_is_refused_before_any_work(tmp_path, capsys):
    """``pipeline --scheduler tcp://nowhere:1`` ran notebooks 01-03 (minutes) before notebook 04 found
    nobody listening; now one line at once, nothing written."""
    from mammo_utils.cli import main

    for address in ("tcp://127.0.0.1:1", "tcp://nowhere.invalid:1", "tcp://127.0.0.1:port"):
        assert main(["pipeline", "--data", str(tmp_path / "data"), "--run", str(tmp_path / "run"),
                     "--scheduler", address]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if " INFO " not in line]
        assert len(err) == 1 and err[0].startswith("error: ") and address in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_a_copied_run_folder_keeps_its_recipe_and_resumes(tmp_path):
    """`cp -r r1 r3`: the folds' saved configs name r1's preprocessed folder; in r3 the same settings
    name r3's. The recipe and the resume check compare the folder relative to the run, so the copy
    resumes (no retraining) while a preprocessed folder elsewhere still counts as a change."""
    from mammo_utils.learn.config import TrainConfig, recipe
    from mammo_utils.learn.runs import check_resumable, config_changes, file_fingerprint

    def cfg(run, pre=None):
        return TrainConfig(run_dir=str(run / "train" / "fold0"), folds=str(run / "folds.csv"),
                           preprocessed=str(pre or run / "preprocessed" / "train_64x32"))

    r1, r3 = tmp_path / "r1", tmp_path / "r3"
    for run in (r1, r3):
        run.mkdir()
        (run / "folds.csv").write_text("patient_id,image_id,fold\n1,2,0\n")
    saved, folds_print = cfg(r1).to_dict(), file_fingerprint(r1 / "folds.csv")
    ckpt = {"model_args": {}, "config": saved, "folds_fingerprint": folds_print}
    assert config_changes(saved, cfg(r3), folds_print) == []
    assert recipe(saved) == recipe(cfg(r3).to_dict())
    check_resumable(ckpt, cfg(r3), r3 / "last.pt", {})  # no error
    elsewhere = cfg(r3, tmp_path / "shared" / "train_64x32")
    assert config_changes(saved, elsewhere, folds_print) == ["preprocessed"]
    assert recipe(saved) != recipe(elsewhere.to_dict())
    with pytest.raises(CheckpointError, match="preprocessed"):
        check_resumable(ckpt, elsewhere, r3 / "last.pt", {})

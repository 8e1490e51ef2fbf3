"""Nothing lost on reruns, interrupts and concurrent runs; one clear line instead of a traceback."""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from mammo_utils import paths
from mammo_utils.errors import UserError
from mammo_utils.prepare import manifest as pm
from mammo_utils.prepare import preprocess as pp
from mammo_utils.prepare import runner
from mammo_utils.tables import read_csv


def cli(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "mammo_utils", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


# ---- 1, 2: sweep folders and comparisons ---------------------------------------------------------------

def test_sweep_names_map_to_folders_one_to_one(tmp_path):
    from mammo_utils.workflow.sweep import read_grid

    g = tmp_path / "g.json"
    g.write_text(json.dumps({"combinations": [{"name": "recipe/a", "04.loss": "bce"},
                                               {"name": "recipe a", "04.loss": "focal"}]}))
    names = [c["name"] for c in read_grid(g)]
    assert len(set(names)) == 2 and all(n.startswith("recipe-a") for n in names)
    long = tmp_path / "long.yaml"
    long.write_text("04.lr: [0.001, 0.002]\n04.batch_size: [16]\n04.ema_decay: [0.0]\n04.loss: [bce]\n"
                    "04.pos_fraction: [0.25]\n04.sampler: [balanced]\n04.select_metric: [pf1]\n")
    names = [c["name"] for c in read_grid(long)]
    assert len(set(names)) == 2 and all(len(n) <= 80 for n in names)
    twice = tmp_path / "twice.json"
    twice.write_text(json.dumps({"combinations": [{"name": "a", "04.loss": "bce"}, {"name": "a", "04.loss": "bce"}]}))
    with pytest.raises(UserError, match="listed twice"):
        read_grid(twice)
    bad = tmp_path / "bad.yaml"
    bad.write_text("combinations: 5\n")
    with pytest.raises(UserError, match="combinations must be a non-empty list"):
        read_grid(bad)


def test_comparison_names_stale_runs_and_lists_failed_ones(tmp_path, capsys):
    from mammo_utils.judge import compare

    for name in ("old_seed0", "new_seed0"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps({"test_breasts": 4, "test_positives": 1}))
        paths.sweep_params(tmp_path / name).write_text(json.dumps({"combination": name[:3], "seed": 0}))
    runs = compare.collect(tmp_path, ["new_seed0", "broken_seed0"])
    assert runs.run.tolist() == ["new_seed0"] and "left out 1 run(s) of earlier grids: old_seed0" in capsys.readouterr().out
    table = pd.DataFrame({"combination": ["new"], "runs": ["new_seed0"], "test_auc_seed_mean": [0.7]})
    written = pd.read_csv(compare.write_comparison(tmp_path, table, ["broken_seed0"]))
    assert written.status.tolist() == ["finished", "failed"] and written.combination.tolist() == ["new", "broken"]


# ---- 4, 5, 11: preprocessing records -------------------------------------------------------------------

def test_errors_survive_a_failed_run_and_changed_sources_are_redone(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    train = pd.read_csv(data / "train.csv").head(6)
    train.to_csv(data / "train.csv", index=False)
    bad = train.iloc[0]
    (data / "train_images" / str(bad.patient_id) / f"{bad.image_id}.dcm").write_text("not a dicom")
    out, cfg = tmp_path / "png", pp.PreprocessConfig(size=(64, 32))
    first = runner.run_preprocess(data, "train", out, cfg, jobs=1, progress=False)
    assert first["failed"] == 1 and pm.read_errors(out).image_id.tolist() == [str(bad.image_id)]
    with pytest.raises(UserError, match="local:N"):
        runner.run_preprocess(data, "train", out, cfg, jobs=1, progress=False, scheduler="bogus")
    assert pm.read_errors(out).image_id.tolist() == [str(bad.image_id)], "a run that did nothing wiped errors.csv"
    # a source that changed (other bytes, other time) is preprocessed again; the others are kept
    changed = train.iloc[1]
    src = data / "train_images" / str(changed.patient_id) / f"{changed.image_id}.dcm"
    other = data / "train_images" / str(train.iloc[2].patient_id) / f"{train.iloc[2].image_id}.dcm"
    shutil.copy(other, src)
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))
    again = runner.run_preprocess(data, "train", out, cfg, jobs=1, progress=False)
    assert again["processed"] == 1 and again["skipped"] == 4 and again["failed"] == 1
    manifest = pd.read_csv(out / "manifest.csv")
    assert len(manifest) == 5 and manifest.image_id.is_unique
    row = manifest.set_index("image_id").loc[changed.image_id]
    assert row.source_bytes == src.stat().st_size and row.source_mtime_ns == src.stat().st_mtime_ns


def test_one_writer_per_folder(tmp_path):
    """A second writer stops at once with one line naming the holder."""
    from mammo_utils.locks import folder_lock
    from mammo_utils.workflow.pipeline import run_pipeline

    with folder_lock(tmp_path / "run", "a pipeline run"):
        with pytest.raises(UserError, match=rf"in use by a pipeline run \(pid {os.getpid()} on "):
            with folder_lock(tmp_path / "run", "another"):
                pass
        with pytest.raises(UserError, match="in use by"):
            run_pipeline(tmp_path / "missing-data", tmp_path / "run", only="01", progress=False)
        assert not (tmp_path / "missing-data").exists()  # refused before any work (no synthetic data written)
    with folder_lock(tmp_path / "run", "a later run"):  # released when the holder is done
        pass


HOLD_AND_FORK = """
import multiprocessing, sys, time
from mammo_utils.locks import folder_lock

with folder_lock(sys.argv[1], "training"):
    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))  # a DataLoader worker
    child.start()
    print(child.pid, flush=True)
    time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork and /proc")
def test_a_killed_holders_forked_children_do_not_keep_its_lock(tmp_path):
    """The holder is killed while a forked child of it (a DataLoader worker) still lives: the folder is free
    at once, not when the orphan notices (a retried fold on a Dask cluster would stop with "in use")."""
    import contextlib
    import signal

    from mammo_utils.locks import folder_lock

    proc = subprocess.Popen([sys.executable, "-c", HOLD_AND_FORK, str(tmp_path / "run")], stdout=subprocess.PIPE,
                            text=True)
    child = int(proc.stdout.readline())
    try:
        with pytest.raises(UserError, match="in use by training"):
            with folder_lock(tmp_path / "run", "a retry"):
                pass
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert os.path.exists(f"/proc/{child}")  # the orphan lives on
        with folder_lock(tmp_path / "run", "a retry"):
            pass
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_concurrent_preprocessing_into_one_folder(tiny_data, tmp_path):
    """Two preprocess runs into one folder: one completes the manifest, the other refuses in one line."""
    out = tmp_path / "png"
    first = subprocess.Popen([sys.executable, "-m", "mammo_utils", "preprocess", "--data", str(tiny_data), "--out",
                              str(out), "--size", "64x32", "--jobs", "1"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    lock = out / ".mammo.lock"
    deadline = time.time() + 120
    while not (lock.exists() and lock.stat().st_size) and time.time() < deadline:
        time.sleep(0.05)
    second = cli("preprocess", "--data", str(tiny_data), "--out", str(out), "--size", "64x32", "--jobs", "1")
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode == 2 and "is in use by preprocessing train" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    assert len(pd.read_csv(out / "manifest.csv")) == len(pd.read_csv(tiny_data / "train.csv"))


def test_checkpoint_temporary_names_are_unique(tmp_path, monkeypatch):
    import torch

    from mammo_utils.learn import checkpoint

    names = []
    real = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: (names.append(str(f)), real(obj, f)))
    checkpoint.save_checkpoint(tmp_path / "last.pt", model={})
    checkpoint.save_checkpoint(tmp_path / "last.pt", model={})
    assert len(set(names)) == 2 and str(os.getpid()) in names[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


# ---- 6, 9: parameters ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_relative_parameter_paths_resolve_in_the_callers_folder(tiny_data, tmp_path, monkeypatch):
    from mammo_utils.workflow.pipeline import run_pipeline

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    monkeypatch.chdir(tmp_path)
    params = {"image_size": "64x32", "02.preprocessed_dir": "relpre", "02.limit": "4", "gallery_per_group": "1"}
    assert run_pipeline(data, tmp_path / "run", params=params, only="02", progress=False) == 0
    assert (tmp_path / "relpre" / "manifest.csv").exists()
    assert not (paths.PROJECT_ROOT / "relpre").exists()


def test_none_is_a_value(tmp_path):
    from mammo_utils.workflow.pipeline import parse_value, plan_parameters

    plan = plan_parameters(tmp_path, tmp_path / "run", {"03.label_control": "none", "04.model": "none",
                                                        "05.aggregate": "none"})
    assert plan["03_sampling"]["label_control"] == "none"  # a string choice keeps the word
    assert plan["04_train"]["model"] is None               # a None default takes None
    assert parse_value("none", "auto") == "none" and parse_value("none") is None
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"preprocessed": str(tmp_path / "missing")}))
    res = cli("train", "--config", str(cfg), "--set", "amp=none", "--set", "epochs=1")
    assert "amp must be" not in res.stderr and "manifest.csv not found" in res.stderr  # amp=none was accepted


# ---- 7, 8: what viewers and galleries show ---------------------------------------------------------------

def test_gallery_and_viewer_skip_an_unreadable_image(tiny_data, tmp_path, capsys):
    from mammo_utils.explore import eda
    from mammo_utils.explore import viewer as V

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    table = read_csv(data / "train.csv")
    first = table[table.patient_id == table.patient_id.iloc[0]]
    gone = first.iloc[0]
    (data / "train_images" / str(gone.patient_id) / f"{gone.image_id}.dcm").unlink()
    raw, shown, titles = eda.load_gallery(data, "train", first, display_px=128)
    assert len(shown) == len(first) - 1 and f"{gone.image_id}.dcm" in capsys.readouterr().out
    v = V.PatientViewer(data, display_px=128, tile_px=(120, 96))
    screen = v.render()
    tiles = np.split(screen, len(v.views), axis=1)
    broken = [i for i, r in enumerate(v.views) if r["image_id"] == gone.image_id][0]
    assert (tiles[broken][22:, :, 0] == 48).mean() > 0.8   # the placeholder tile, with its reason in text
    assert all(t[22:].max() > 100 for i, t in enumerate(tiles) if i != broken)


# ---- 12: one line, not a traceback -----------------------------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (["train", "--config", "{tmp}/inf.json"], "lr must be a finite number"),
    (["folds", "--data", "{data}", "--out", "{tmp}/f.csv", "--n-splits", "1"], "n_splits must be at least 2"),
    (["preprocess", "--data", "{data}", "--out", "{tmp}/p", "--scheduler", "local:0"], "N >= 1 workers"),
    (["preprocess", "--data", "{data}", "--out", "{tmp}/p", "--scheduler", "tcp://127.0.0.1:1"],
     "cannot reach the Dask scheduler"),
    (["preprocess", "--data", "{data}", "--out", "{tmp}/p", "--image-size", "100000x50000"], "too large"),
])
def test_bad_values_get_one_line(tiny_data, tmp_path, args, needle):
    (tmp_path / "inf.json").write_text(json.dumps({"lr": float("inf")}))  # JSON's Infinity
    t0 = time.time()
    res = cli(*[a.format(data=tiny_data, tmp=tmp_path) for a in args])
    assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr, res.stderr[-1500:]
    assert time.time() - t0 < 20
    assert not list(tmp_path.rglob("*.png"))  # refused up front, not file by file


def test_diverged_training_is_one_line(monkeypatch, capsys):
    from mammo_utils import __main__ as M
    from mammo_utils.learn import train as T

    def diverge(cfg, progress=True):
        raise T.NonFiniteLossError("5 non-finite losses in a row at step 3: lower lr")

    monkeypatch.setattr(T, "train", diverge)
    assert M.main(["train", "--set", "epochs=1"]) == 2
    assert "error: 5 non-finite losses in a row" in capsys.readouterr().err


def test_small_limits(tmp_path):
    from mammo_utils.parallel import cpu_count, resolve_jobs
    from mammo_utils.tables import validate_table

    assert resolve_jobs(64) == cpu_count()  # the header scan's jobs too
    df = pd.DataFrame({"site_id": [1], "patient_id": [1], "image_id": ["12345678901234567890"], "laterality": ["L"],
                       "view": ["CC"], "cancer": [0]})
    assert validate_table(df, tmp_path / "train.csv", labelled=True).image_id[0] == "12345678901234567890"  # text
    with pytest.raises(UserError, match="may hold only letters, digits"):
        validate_table(df.assign(image_id=["a/b"]), tmp_path / "train.csv", labelled=True)


def test_one_bit_file_reads(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.pixels import pack_bits
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from mammo_utils.dicom import read_image

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 30, 21, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    mask = np.zeros((30, 21), np.uint8)
    mask[5:25, 3:15] = 1
    ds.PixelData = pack_bits(mask)  # 79 bytes for 630 pixels: not truncated
    ds.save_as(tmp_path / "one_bit.dcm", enforce_file_format=True)
    np.testing.assert_array_equal(read_image(tmp_path / "one_bit.dcm") > 0.5, mask > 0)


def test_header_summary_of_a_machine_whose_files_all_fail():
    """Notebook 01 must not stop when every scanned file of the split is unreadable."""
    from mammo_utils.explore import eda

    headers = pd.DataFrame({"image_id": [1, 2], "machine_id": [21, 48], "error": ["file not found"] * 2})
    summary = eda.header_summary(headers)
    assert list(summary.index) == [21, 48] and summary.images.tolist() == [1, 1]


@pytest.mark.slow
def test_ctrl_c_stops_the_whole_pipeline_and_ends_its_run_killed(tiny_data, tmp_path):
    """The kernel runs in a process group of its own, which the terminal's Ctrl-C never reaches: the
    pipeline passes it on, the kernel stops, the pipeline exits 130 with one line and its MLflow run ends
    KILLED (the fake 04_train sleeps where training would run)."""
    import signal

    import nbformat
    import psutil
    from mlflow import MlflowClient

    notebooks, run = tmp_path / "notebooks", tmp_path / "run"
    notebooks.mkdir()
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('data_dir = "data"  # the data\nrun_dir = "run"  # the run\n'
                                       'tracking = "mlflow"  # tracked')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "import os, pathlib, time\npathlib.Path(run_dir, 'kernel.pid').write_text(str(os.getpid()))\ntime.sleep(300)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, notebooks / "04_train.ipynb")
    script = ("import sys\nfrom pathlib import Path\nfrom mammo_utils.workflow import pipeline\n"
              f"pipeline.NOTEBOOK_DIR = Path({str(notebooks)!r})\n"
              f"sys.exit(pipeline.run_pipeline({str(tiny_data)!r}, {str(run)!r}, notebooks=['04_train'], "
              f"progress=False))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "kernel.pid").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert (run / "kernel.pid").exists(), proc.communicate()
    kernel = int((run / "kernel.pid").read_text())
    t0 = time.time()
    proc.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal sends to the pipeline's process
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert time.time() - t0 < 30
    assert not psutil.pid_exists(kernel) or psutil.Process(kernel).status() == psutil.STATUS_ZOMBIE
    assert err.count("interrupted in 04_train") == 1 and "Traceback" not in err
    run_id = json.loads(paths.tracking_json(run).read_text())["run_id"]
    assert MlflowClient().get_run(run_id).info.status == "KILLED"

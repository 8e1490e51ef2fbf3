"""Beyond one process: DDP through torchrun (gloo on CPU, 2 processes) and preprocessing on a Dask cluster."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from mammo_utils import metrics, paths
from mammo_utils.learn.checkpoint import load_checkpoint, load_model
from mammo_utils.learn.config import TrainConfig
from mammo_utils.learn.data import MammoDataset, create_loader, read_split
from mammo_utils.learn.engine import predict_loader
from mammo_utils.learn.launch import torchrun_command
from mammo_utils.learn.sampling import BalancedBatchSampler, make_folds
from mammo_utils.prepare.preprocess import PreprocessConfig
from mammo_utils.prepare.runner import run_preprocess
from mammo_utils.tables import read_csv, read_table


@pytest.fixture(scope="module")
def prepared(tiny_data, tiny_png, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    shutil.copytree(tiny_png, root / "png")
    make_folds(read_table(tiny_data), n_splits=3).to_csv(root / "folds.csv", index=False)
    return root


def config(prepared, run, **kw):
    base = dict(run_dir=str(run), preprocessed=str(prepared / "png"), folds=str(prepared / "folds.csv"),
                model="resnet10t", epochs=2, batch_size=8, lr=1e-3, workers=0, max_steps_per_epoch=4, drop_rate=0.0,
                warmup_epochs=0.0)
    base.update(kw)
    return TrainConfig(**base)


def torchrun(cfg: TrainConfig, nproc: int, tmp_path):
    path = tmp_path / f"cfg_{nproc}.json"
    path.write_text(json.dumps(cfg.to_dict()))
    res = subprocess.run(torchrun_command(path, nproc), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_balanced_sampler_is_rank_aware():
    labels = np.array([1] * 10 + [0] * 90)
    single = BalancedBatchSampler(labels, 8, 0.25, seed=3)
    ranks = [BalancedBatchSampler(labels, 4, 0.25, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for s in [single, *ranks]:
        s.set_epoch(2)
    batches0, batches1, whole = list(ranks[0]), list(ranks[1]), list(single)
    assert len(batches0) == len(batches1) == len(whole)
    for a, b, w in zip(batches0, batches1, whole):
        assert not set(a) & set(b), "ranks must see distinct samples"
        assert labels[a].sum() == labels[b].sum() == 1  # the same share of positives on each rank
        assert sorted(a + b) == sorted(w)  # together: the single-process batch of the global size
    ranks[0].set_epoch(3)
    assert [sorted(b) for b in ranks[0]] != [sorted(b) for b in batches0]  # a new epoch, new batches


@pytest.mark.slow
def test_torchrun_two_processes_write_once_and_resume_through_the_notebook_launcher(prepared, tmp_path, capfd):
    """Epoch 1 from the torchrun command line, epoch 2 resumed by notebook 04's launcher (``train_fold`` with
    ``gpus=2``, the same global batch of 8 as 4 per rank): rank 0 alone writes, validation covers every image
    once, the gathered metrics equal a one-process evaluation of the same weights, both ranks hold the same
    weights at every validation, and the launcher returns the result dict a single-process run returns."""
    from mammo_utils.learn.launch import train_fold

    two = tmp_path / "two"
    res = torchrun(config(prepared, two, batch_size=4, epochs=1), 2, tmp_path)
    assert res.stdout.count("epoch 1/1") == 1  # one rank prints
    first = pd.read_csv(two / "metrics.csv")
    capfd.readouterr()
    result = train_fold(config(prepared, two, batch_size=4, epochs=2, resume=True), gpus=2)
    out = capfd.readouterr().out
    assert out.count("epoch 2/2") == 1 and "epoch 1/2" not in out  # resumed from last.pt: epoch 1 not redone
    assert result["world_size"] == 2 and result["best_epoch"] == load_checkpoint(two / "best.pt")["best_epoch"]
    assert {"val_auc", "val_pf1", "model", "select_metric"} <= set(result) and 0 <= result["threshold"] <= 1
    history = pd.read_csv(two / "metrics.csv")
    assert history.epoch.tolist() == [1, 2] and load_checkpoint(two / "last.pt")["epoch"] == 2
    pd.testing.assert_frame_equal(history.iloc[:1], first)  # epoch 1's row, timings included: not retrained
    # rank 0 alone writes: one best.pt, one metrics.csv with one row per epoch (and the launcher's config)
    assert sorted(p.name for p in two.iterdir()) == sorted(["best.pt", "config.json", "last.pt", "metrics.csv",
                                                              "val_predictions.csv", paths.torchrun_config(two).name])
    assert json.loads((two / "config.json").read_text())["world_size"] == 2
    assert load_checkpoint(two / "best.pt")["world_size"] == 2
    # validation covers every validation image exactly once
    _, val_df = read_split(prepared / "png", prepared / "folds.csv", 0)
    preds = read_csv(two / "val_predictions.csv")
    assert len(preds) == len(val_df) and preds.image_id.is_unique and preds.pred.notna().all()
    assert set(preds.image_id) == set(val_df.image_id)
    # the gathered metrics equal a single-process evaluation of the same weights
    model, ckpt = load_model(two / "best.pt")
    p = predict_loader([model], create_loader(MammoDataset(val_df), 8, 0), len(val_df), torch.device("cpu"))
    np.testing.assert_allclose(preds.pred, p, atol=1e-5)
    again = metrics.summarize(metrics.aggregate_breasts(val_df.assign(pred=p)))
    assert again["auc"] == pytest.approx(ckpt["val_metrics"]["auc"], nan_ok=True)
    assert again["pf1"] == pytest.approx(ckpt["val_metrics"]["pf1"])
    # both ranks hold the very same weights and BatchNorm buffers at every validation, resumed epoch included
    assert history.ranks_agree.all()


NAN_ON_RANK_1 = """
import os, sys
from mammo_utils.learn import train as T
from mammo_utils.learn.config import TrainConfig
from mammo_utils.learn.distributed import shutdown_distributed

real, calls = T.compute_loss, [0]

def nan_on_rank_1(*args, **kwargs):  # one non-finite loss, on rank 1 only, at its second batch
    calls[0] += 1
    loss = real(*args, **kwargs)
    return loss * float("nan") if os.environ["RANK"] == "1" and calls[0] == 2 else loss

T.compute_loss = nan_on_rank_1
T.train(TrainConfig.from_json_file(sys.argv[1]), progress=False)
shutdown_distributed()
"""


def two_gloo_ranks(script: str, config_path, timeout: int = 240):
    """Start ranks 0 and 1 of a gloo group by hand (what torchrun does), each running ``script``."""
    import os
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([sys.executable, "-c", script, str(config_path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail("the ranks hung: a collective fell out of step")
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


@pytest.mark.slow
def test_nonfinite_loss_on_one_rank_skips_on_every_rank_with_ema(prepared, tmp_path):
    """A NaN on rank 1 alone: both ranks skip that batch together (no hang), the skip counts once,
    and the EMA that both validate is identical on both ranks at every epoch."""
    cfg = config(prepared, tmp_path / "nan", batch_size=4, epochs=2, ema_decay=0.9)
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(cfg.to_dict()))
    results = two_gloo_ranks(NAN_ON_RANK_1, path)
    for code, out, err in results:
        assert code == 0, err[-3000:]
    history = pd.read_csv(tmp_path / "nan" / "metrics.csv")
    assert history.nonfinite_skipped.tolist() == [1, 1]  # counted once, not once per rank
    assert history.ranks_agree.all()                       # EMA weights and buffers equal on both ranks
    assert history.step.tolist() == [3, 7]                 # 4 batches an epoch, the first epoch one fewer
    assert "batch skipped on every rank" in results[1][2]


def _pngs(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def test_dask_local_cluster_gives_identical_outputs(tiny_data, tmp_path):
    pytest.importorskip("distributed")
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    train = pd.read_csv(data / "train.csv")
    bad = train.iloc[0]
    (data / "train_images" / str(bad.patient_id) / f"{bad.image_id}.dcm").write_text("not a dicom")
    cfg = PreprocessConfig(size=(64, 32))
    local = run_preprocess(data, "train", tmp_path / "local", cfg, jobs=2, progress=False)
    dask = run_preprocess(data, "train", tmp_path / "dask", cfg, progress=False, scheduler="local:2")
    assert local["processed"] == dask["processed"] == len(train) - 1 and dask["failed"] == 1
    assert _pngs(tmp_path / "local") == _pngs(tmp_path / "dask")
    drop = ["seconds"]
    m1 = pd.read_csv(tmp_path / "local" / "manifest.csv").drop(columns=drop).sort_values("image_id").reset_index(drop=True)
    m2 = pd.read_csv(tmp_path / "dask" / "manifest.csv").drop(columns=drop).sort_values("image_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(m1, m2)
    errors = pd.read_csv(tmp_path / "dask" / "errors.csv")
    assert errors.image_id.tolist() == [bad.image_id] and "not a DICOM" in errors.message[0]
    # resume on the cluster: only the missing image is redone
    (tmp_path / "dask" / paths.png_relpath(train.iloc[1].patient_id, train.iloc[1].image_id)).unlink()
    again = run_preprocess(data, "train", tmp_path / "dask", cfg, progress=False, scheduler="local:2")
    assert again["processed"] == 1 and again["skipped"] == len(train) - 2
    assert _pngs(tmp_path / "local") == _pngs(tmp_path / "dask")


def test_cli_scheduler_option(tiny_data, tmp_path):
    pytest.importorskip("distributed")
    res = subprocess.run([sys.executable, "-m", "mammo_utils", "preprocess", "--data", str(tiny_data), "--out",
                          str(tmp_path / "png"), "--size", "64x32", "--limit", "6", "--scheduler", "local:2"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(pd.read_csv(tmp_path / "png" / "manifest.csv")) == 6
    res = subprocess.run([sys.executable, "-m", "mammo_utils", "preprocess", "--data", str(tiny_data), "--out",
                          str(tmp_path / "png2"), "--scheduler", "bogus"], capture_output=True, text=True)
    assert res.returncode == 2 and "local:N or tcp://" in res.stderr

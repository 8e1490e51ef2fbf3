"""A run folder that has lived (retrained at other settings, partly rerun, copied, interrupted) reports only
its own present: its current checkpoints, one recipe, a current decision, current estimates."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from mammo_utils import metrics, paths
from mammo_utils.errors import UserError
from mammo_utils.judge import estimates, evaluate, inference
from mammo_utils.learn import train as T
from mammo_utils.learn.checkpoint import load_checkpoint, load_model
from mammo_utils.learn.config import TrainConfig
from mammo_utils.learn.holdout import split_holdout, write_holdout
from mammo_utils.learn.runs import Run
from mammo_utils.learn.sampling import make_folds
from mammo_utils.prepare.preprocess import PreprocessConfig
from mammo_utils.prepare.runner import run_preprocess


def fold_cfg(root, run, k, **kw):
    """A tiny fold: 64x32 images, 1 epoch of 2 steps, 2 DataLoader workers, no tracking unless asked."""
    base = dict(run_dir=str(paths.train_dir(run, k)), preprocessed=str(root / "png"), folds=str(paths.folds_csv(run)),
                fold=k, model="resnet10t", epochs=1, batch_size=8, workers=2, max_steps_per_epoch=2, tracking="none")
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def lived(tiny_data, tmp_path_factory):
    """A run of two folds trained at lr 1e-3 with a decision at 0.9, then both retrained at lr 5e-4 and
    decided at 0.1: every fold holds a set-aside earlier run under previous/."""
    root = tmp_path_factory.mktemp("lived")
    run = root / "run"
    run_preprocess(tiny_data, "train", root / "png", PreprocessConfig(size=(64, 32)), jobs=1, progress=False)
    holdout, rest, info = split_holdout(pd.read_csv(tiny_data / "train.csv"), 0.25, 0)
    write_holdout(run, holdout, info)
    make_folds(rest, "paired", 0.0, n_splits=2, seed=0).to_csv(paths.folds_csv(run), index=False)
    for lr, threshold in ((1e-3, 0.9), (5e-4, 0.1)):
        for k in (0, 1):
            T.train(fold_cfg(root, run, k, lr=lr), progress=False)
        evaluate.save_decision_all(run, threshold, "mean", {"method": "best", "chosen_on": "oof"})
    return root, run


def current(run):
    return [paths.train_dir(run, k) / paths.BEST for k in (0, 1)]


# ---- 1. set-aside checkpoints never join a result ----------------------------------------------------

def test_set_aside_checkpoints_join_no_ensemble_bundle_or_holdout(lived, tmp_path):
    from mammo_utils.workflow.bundle import copy_run

    root, run = lived
    assert all(list((paths.train_dir(run, k) / "previous").glob("*/best.pt")) for k in (0, 1))
    assert inference.find_checkpoints([paths.train_root(run)]) == current(run)
    assert inference.find_checkpoints([run]) == current(run)
    ens = inference.load_ensemble(inference.find_checkpoints([paths.train_root(run)]), "cpu")
    assert len(ens.models) == 2 and ens.threshold == pytest.approx(0.1)  # not 4 models at (0.9 + 0.1) / 2
    copied = copy_run(run, tmp_path / "bundle")
    assert sorted(p.relative_to(tmp_path / "bundle").as_posix() for p in copied if p.name == "best.pt") == \
        ["train/fold0/best.pt", "train/fold1/best.pt"]
    assert not list((tmp_path / "bundle").rglob("previous"))
    assert inference.load_ensemble(inference.find_checkpoints([tmp_path / "bundle" / "train"]), "cpu").threshold == \
        pytest.approx(0.1)  # the bundle's copy keeps its decision: the same checkpoints
    # the holdout predictions from the run folder are those of its current checkpoints
    images = estimates.predict_holdout(run)
    from mammo_utils.learn.data import MammoDataset, create_loader
    from mammo_utils.learn.engine import predict_loader
    from mammo_utils.tables import read_manifest

    manifest = read_manifest(root / "png").set_index("image_id")
    rows = images.dropna(subset=["pred"])
    ds = MammoDataset(rows.assign(abs_path=[manifest.abs_path[i] for i in rows.image_id]))
    models = [load_model(p)[0] for p in current(run)]
    mine = predict_loader(models, create_loader(ds, 8, 0), len(ds), torch.device("cpu"))
    np.testing.assert_allclose(rows.pred.to_numpy(), mine, atol=1e-5)


# ---- 2. a fold of another recipe is left out, named, everywhere ------------------------------------------

def test_a_fold_of_another_recipe_is_left_out_with_one_line(lived, tmp_path, capsys):
    root, run = lived
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    T.train(fold_cfg(root, copy, 0, lr=2e-4), progress=False)  # fold 0 only, at another lr
    capsys.readouterr()
    assert Run(copy).fold_numbers() == [0] and list(Run(copy).other_recipe()) == [1]
    out = capsys.readouterr().out
    assert out.count("fold 1 of") == 1 and "another recipe (lr 0.0005 (now 0.0002))" in out
    assert inference.find_checkpoints([copy]) == [paths.train_dir(copy, 0) / paths.BEST]
    assert set(estimates.collect_oof(copy).fold) == {0}
    assert (estimates.predict_holdout(copy).folds == 1).all()
    # the decision of notebook 05 was chosen on the old fold 0: stale, never applied
    assert Run(copy).decision() is None
    ckpt = load_checkpoint(paths.train_dir(copy, 0) / paths.BEST)
    assert inference.load_ensemble(inference.find_checkpoints([copy]), "cpu").threshold == pytest.approx(ckpt["threshold"])


# ---- 3 and 6. the summary: built in the package, each figure beside its threshold, never stale -------------

def evaluate_like_notebook_05(run, fold=0):
    """The cells of notebook 05 that measure and record, in order."""
    fold_run = Run(run).fold(fold).folder
    images = evaluate.read_predictions(fold_run)
    fold_breasts = metrics.aggregate_breasts(images)
    fold_threshold = metrics.best_threshold(fold_breasts.cancer, fold_breasts.pred)[0]
    selection = evaluate.evaluate_breasts(fold_breasts, fold_threshold, 20, 0)
    selection.update(evaluate.selection_info(fold_run), fold=fold, measured_on=f"train/fold{fold}/val_predictions.csv")
    oof = estimates.collect_oof(run)
    oof_breasts = metrics.aggregate_breasts(oof)
    threshold = evaluate.choose_threshold(oof_breasts.cancer, oof_breasts.pred, "quantile", 0.5)
    held = estimates.holdout_breasts(run, "mean")
    summary = estimates.summarize(selection, estimates.estimate(oof_breasts, threshold, 20),
                                  estimates.estimate(held, threshold, 20), Run(run).holdout_info())
    evaluate.save_decision_all(run, threshold, "mean", {"method": "quantile", "chosen_on": "oof"})
    evaluate.write_evaluation(run, {"threshold": threshold, "aggregate": "mean", "threshold_method": "quantile",
                                    "chosen_on": "oof", "selection": selection, "estimates": summary})
    return threshold


def recompute(breasts, threshold):
    y, p = breasts.cancer.to_numpy(), breasts.pred.to_numpy()
    return (metrics.pfbeta(y, p >= threshold), *metrics.sensitivity_specificity(y, p, threshold))


def test_every_figure_of_the_summary_sits_beside_its_own_threshold(lived, tmp_path):
    from mammo_utils.workflow.summary import build_summary

    root, run = lived
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    threshold = evaluate_like_notebook_05(copy)
    s = build_summary(tmp_path, copy, {})
    assert "stale" not in s and s["decision"]["threshold"] == pytest.approx(threshold)
    assert "threshold" not in s  # no bare threshold beside figures measured at another one
    val = metrics.aggregate_breasts(pd.read_csv(copy / s["val_measured_on"]))
    assert (s["val_pf1"], s["val_sensitivity"], s["val_specificity"]) == pytest.approx(
        recompute(val, s["val_threshold"]), nan_ok=True)
    assert s["val_threshold"] != pytest.approx(threshold)  # the fold's own threshold, not the OOF one
    oof = metrics.aggregate_breasts(pd.read_csv(copy / s["estimates"]["oof"]["measured_on"]))
    held = metrics.aggregate_breasts(pd.read_csv(copy / s["estimates"]["holdout"]["measured_on"]).dropna(subset=["pred"]))
    for name, breasts in (("oof", oof), ("holdout", held)):
        e = s["estimates"][name]
        assert e["breasts"] == len(breasts)
        assert (e["pf1"], e["sensitivity"], e["specificity"]) == pytest.approx(recompute(breasts, e["threshold"]),
                                                                               nan_ok=True), name


def test_a_partial_rerun_marks_what_it_changed_stale(lived, tmp_path, tiny_data):
    from mammo_utils.workflow.summary import build_summary

    root, run = lived
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    evaluate_like_notebook_05(copy)
    assert "estimates" in build_summary(tmp_path, copy, {})
    # notebook 03 again with another holdout_seed (pipeline --only 03)
    holdout, rest, info = split_holdout(pd.read_csv(tiny_data / "train.csv"), 0.25, 1)
    write_holdout(copy, holdout, info)
    s = build_summary(tmp_path, copy, {})
    assert "estimates" not in s and "val_pf1" not in s
    assert any("another holdout" in why for why in s["stale"]) and any("evaluation.json" in why for why in s["stale"])
    # a fold retrained: the evaluation was built on other checkpoints
    again = tmp_path / "again"
    shutil.copytree(run, again)
    evaluate_like_notebook_05(again)
    T.train(fold_cfg(root, again, 1, lr=5e-4, resume=False), progress=False)  # same recipe, new file
    assert any("other checkpoints" in why for why in build_summary(tmp_path, again, {})["stale"])


# ---- 2. two kinds of settings; same seed, same run; a resume reproduces the uninterrupted run ---------

def test_bookkeeping_resumes_and_model_settings_restart(lived, tmp_path, capsys):
    from mammo_utils.learn.config import BOOKKEEPING, setting_kind
    from mammo_utils.cli.learn import train_epilog

    root, run = lived
    assert {"tracking", "tracking_uri", "log_checkpoints", "max_steps_per_epoch", "workers", "epochs"} <= set(BOOKKEEPING)
    assert setting_kind("lr") == "model" and setting_kind("tracking") == "bookkeeping"
    assert "tracking_uri         bookkeeping" in train_epilog() and "lr                   model" in train_epilog()
    other = tmp_path / "other"
    shutil.copytree(run, other)
    capsys.readouterr()
    T.train(fold_cfg(root, other, 0, lr=5e-4, epochs=2, tracking="none", workers=0, max_steps_per_epoch=3,
                     log_checkpoints=True, tracking_uri="sqlite:///nowhere.db"), progress=False)
    assert "resuming" in capsys.readouterr().out  # a copied folder, its server down: the finished epoch is kept
    assert pd.read_csv(paths.train_dir(other, 0) / paths.METRICS).epoch.tolist() == [1, 2]
    assert len(list((paths.train_dir(other, 0) / "previous").glob("*/last.pt"))) == 1  # only the fixture's lr change
    T.train(fold_cfg(root, other, 0, lr=5e-4, epochs=2, seed=1), progress=False)  # the seed changes the model
    assert "other settings (seed)" in capsys.readouterr().out


def test_a_resumed_fold_reproduces_the_uninterrupted_run(lived, tmp_path, monkeypatch):
    root, run = lived
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    for r in (whole, cut):
        shutil.copytree(run, r, ignore=shutil.ignore_patterns("train"))
    T.train(fold_cfg(root, whole, 0, epochs=2), progress=False)
    real, calls = T.validate, []

    def stop_in_epoch_2(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C during epoch 2: last.pt holds epoch 1
        return real(*a, **k)

    monkeypatch.setattr(T, "validate", stop_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        T.train(fold_cfg(root, cut, 0, epochs=2), progress=False)
    monkeypatch.undo()
    T.train(fold_cfg(root, cut, 0, epochs=2), progress=False)
    a, b = (pd.read_csv(paths.train_dir(r, 0) / paths.METRICS) for r in (whole, cut))
    assert b.epoch.tolist() == [1, 2]
    np.testing.assert_allclose(a.train_loss, b.train_loss, rtol=1e-6)
    np.testing.assert_allclose(a.val_auc, b.val_auc, rtol=1e-6)


def test_same_seed_same_run_whatever_order_preprocessing_wrote(lived, tmp_path):
    """Parallel preprocessing writes manifest rows as files finish: another order must not train another model."""
    root, run = lived
    shuffled = tmp_path / "png"
    shutil.copytree(root / "png", shuffled)
    manifest = pd.read_csv(shuffled / "manifest.csv")
    manifest.sample(frac=1, random_state=3).to_csv(shuffled / "manifest.csv", index=False)
    runs = []
    for pre in (root / "png", shuffled):
        r = tmp_path / f"r{len(runs)}"
        shutil.copytree(run, r, ignore=shutil.ignore_patterns("train"))
        T.train(fold_cfg(root, r, 0, preprocessed=str(pre)), progress=False)
        runs.append(pd.read_csv(paths.train_dir(r, 0) / paths.METRICS))
    np.testing.assert_allclose(runs[0].train_loss, runs[1].train_loss, rtol=1e-6)
    assert load_checkpoint(paths.train_dir(tmp_path / "r0", 0) / paths.BEST)["provenance"]["deterministic"] is True


# ---- 5 (item 8). the fallback prior is the data's prevalence, not the sampled one -------------------------

def test_unreadable_breasts_get_the_data_prevalence(lived):
    from mammo_utils.tables import with_prediction_id

    root, run = lived
    folds = with_prediction_id(pd.read_csv(paths.folds_csv(run)))
    whole = folds.groupby("prediction_id").cancer.max().mean()
    sampled = folds[folds.sampled].groupby("prediction_id").cancer.max().mean()
    assert sampled > whole + 0.1  # paired undersampling raised it
    ckpt = load_checkpoint(paths.train_dir(run, 0) / paths.BEST)
    assert ckpt["data_breast_prevalence"] == pytest.approx(whole)
    assert inference.load_ensemble(current(run), "cpu").prevalence == pytest.approx(whole)


# ---- 6 (item 7). holdout predictions run as the run validated ----------------------------------------------

def test_holdout_is_predicted_with_the_runs_batch_workers_and_device(lived, monkeypatch):
    from mammo_utils.learn import data as D

    root, run = lived
    seen = []
    real = D.create_loader

    def spy(ds, batch_size, workers=2, **kw):
        seen.append((batch_size, workers))
        return real(ds, batch_size, workers, **kw)

    monkeypatch.setattr(D, "create_loader", spy)
    estimates.predict_holdout(run)
    assert seen == [(16, 2)]  # twice the run's batch of 8, its 2 workers (not fp32 on workers 0 always)
    ens = inference.load_ensemble(current(run), "cpu")  # the submission's and TTA's settings too
    assert (ens.batch_size, ens.workers, ens.amp) == (16, 2, "auto")


# ---- 9 (item 10). the leakage check and breasts that lost every image ----------------------------------------

def test_a_fold_without_a_holdout_fingerprint_fails_the_leakage_check(lived, tmp_path):
    root, run = lived
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    cfg = json.loads((paths.train_dir(copy, 1) / paths.CONFIG).read_text())
    cfg.pop("holdout_fingerprint")
    (paths.train_dir(copy, 1) / paths.CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="fold 1 .* records no holdout"):
        estimates.predict_holdout(copy)


def test_holdout_breasts_whose_images_all_failed_are_kept_and_named(capsys):
    images = pd.DataFrame({"patient_id": ["1", "1", "2", "2"], "laterality": list("LLRR"), "cancer": [1, 1, 0, 0],
                           "pred": [0.8, 0.6, np.nan, np.nan]})
    breasts = estimates.with_unreadable(images, "mean", 0.02)
    assert sorted(breasts.prediction_id) == ["1_L", "2_R"]
    assert breasts.set_index("prediction_id").pred.to_dict() == pytest.approx({"1_L": 0.7, "2_R": 0.02})
    assert "1 holdout breast(s) have no readable image (2_R)" in capsys.readouterr().out

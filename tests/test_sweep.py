"""Sweeps: grid files, resuming, reusing preprocessing, and the paired bootstrap behind the comparison."""
import itertools
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from mammo_utils import compare
from mammo_utils.errors import UserError
from mammo_utils.sweep import read_grid, run_sweep


def hand_auc(y, p):
    """Mann-Whitney: the share of (positive, negative) pairs ranked correctly, ties counting half."""
    pos, neg = [a for a, t in zip(p, y) if t], [a for a, t in zip(p, y) if not t]
    if not pos or not neg:
        return None
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg) / (len(pos) * len(neg))


def test_paired_bootstrap_matches_a_hand_computation():
    y = np.array([1, 0, 1, 0])
    a = np.array([0.9, 0.2, 0.6, 0.7])
    b = np.array([0.4, 0.5, 0.8, 0.1])
    every = np.array(list(itertools.product(range(4), repeat=4)))  # all 256 resamples, equally likely
    got = compare.paired_bootstrap(y, a, b, "auc", indices=every)
    diffs = []
    for idx in every:
        ya, pa, pb = y[idx], a[idx], b[idx]
        da, db = hand_auc(ya, pa), hand_auc(ya, pb)
        if da is not None:
            diffs.append(da - db)
    assert got["resamples"] == len(diffs)
    assert got["diff"] == pytest.approx(hand_auc(y, a) - hand_auc(y, b))
    assert got["ci_low"] == pytest.approx(np.percentile(diffs, 2.5))
    assert got["ci_high"] == pytest.approx(np.percentile(diffs, 97.5))
    same = compare.paired_bootstrap(y, a, a, "auc", n=200)
    assert same["diff"] == same["ci_low"] == same["ci_high"] == 0 and not same["significant"]


def test_read_grid_product_and_named(tmp_path):
    g = tmp_path / "g.yaml"
    g.write_text("04.loss: [bce, focal]\n03.label_control: [none, shuffled]\n")
    combos = read_grid(g)
    assert len(combos) == 4 and [c["control"] for c in combos] == [False, True, False, True]
    assert combos[0]["params"] == {"04.loss": "bce", "03.label_control": "none"}
    j = tmp_path / "g.json"
    j.write_text(json.dumps({"combinations": [{"name": "a b", "04.loss": "bce"},
                                               {"name": "ctl", "03.label_control": "shuffled", "control": True}]}))
    named = read_grid(j)
    assert [c["name"] for c in named] == ["a-b", "ctl"] and named[1]["control"] and "control" not in named[1]["params"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("04.loss: bce\n")
    with pytest.raises(UserError, match="non-empty list"):
        read_grid(bad)


@pytest.mark.slow
def test_tiny_sweep_resumes_and_reuses_preprocessing(tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    grid = tmp_path / "grid.yaml"
    grid.write_text("04.loss: [bce, focal]\n")
    fixed = {"image_size": "64x32", "epochs": "1", "max_steps_per_epoch": "2", "workers": "0", "n_splits": "3",
             "bootstrap": "20", "05.n_examples": "1", "06.jobs": "1"}
    sweep = tmp_path / "sweep"
    assert run_sweep(data, sweep, grid, seeds=[0], params=fixed, progress=False) == 0
    table = pd.read_csv(sweep / "comparison.csv")
    assert list(table.combination) == ["loss-bce", "loss-focal"]
    assert {"test_auc", "test_auc_ci_low", "test_auc_ci_high", "val_auc_ci_low", "test_pf1_ci_high"} <= set(table.columns)
    runs = sorted(p.name for p in sweep.iterdir() if (p / "summary.json").exists())
    assert runs == ["loss-bce_seed0", "loss-focal_seed0"]
    # the second combination reused the preprocessing and the folds of the first
    assert (sweep / "loss-bce_seed0" / "notebooks" / "02_preprocess.ipynb").exists()
    assert not (sweep / "loss-focal_seed0" / "notebooks" / "02_preprocess.ipynb").exists()
    assert not (sweep / "loss-focal_seed0" / "notebooks" / "03_sampling.ipynb").exists()
    assert len(list((sweep / "_shared" / "preprocessed").glob("train_*"))) == 1
    for r in runs:
        s = json.loads((sweep / r / "summary.json").read_text())
        assert s["completed"] and "val_auc" in s and "test_auc" in s
    # rerunning skips finished combinations
    stamp = (sweep / "loss-bce_seed0" / "summary.json").stat().st_mtime
    capsys.readouterr()
    assert run_sweep(data, sweep, grid, seeds=[0], params=fixed, progress=False, compare=False) == 0
    assert capsys.readouterr().out.count("skipped") == 2
    assert (sweep / "loss-bce_seed0" / "summary.json").stat().st_mtime == stamp


def test_held_out_score_reads_labels_probabilities_and_the_submission(tmp_path):
    from mammo_utils.pipeline import score_synthetic_test

    data, run = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    run.mkdir()
    pd.DataFrame({"split": ["test"] * 4 + ["train"], "patient_id": [1, 1, 2, 2, 3], "laterality": list("LRLRL"),
                  "cancer": [1, 0, 0, 0, 1]}).to_csv(data / "synthetic_truth.csv", index=False)
    pd.DataFrame({"prediction_id": ["1_L", "1_R", "2_L", "2_R"], "cancer": [1.0, 1.0, 0.0, 0.0]}).to_csv(
        run / "submission.csv", index=False)
    pd.DataFrame({"prediction_id": ["1_L", "1_L", "1_R", "2_L", "2_R"], "pred": [0.9, 0.5, 0.8, 0.1, 0.2]}).to_csv(
        run / "submission_images.csv", index=False)
    got = score_synthetic_test(data, run)
    # breast means 0.7, 0.8, 0.1, 0.2: the cancer breast ranks below one negative -> AUC 2/3
    assert got["test_auc"] == pytest.approx(2 / 3) and got["test_breasts"] == 4 and got["test_positives"] == 1
    assert got["test_pf1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)  # binary submission: precision 1/2, recall 1

"""Sweeps: grid files, resuming, reusing preprocessing, and the paired bootstrap behind the comparison."""
import itertools
import json

import nbformat
import numpy as np
import pandas as pd
import pytest

from mammo_utils import metrics, paths
from mammo_utils.errors import UserError
from mammo_utils.judge import compare
from mammo_utils.workflow.sweep import read_grid, run_sweep


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
def test_a_sweep_over_two_imported_datasets_and_the_synthetic_set(tiny_data, tmp_path, capfd, monkeypatch):
    """One sweep over a user's folder (no synthetic truth: the holdout judges): CBIS-DDSM and mini-MIAS film
    scans imported and combined with the synthetic set. The sweep resumes, reuses preprocessing and folds,
    nests its MLflow runs, and compares the current grid only; each run holds out patients of every source
    (CBIS's own test split among them), evaluates by source, and its crop keeps every film lesion."""
    from mammo_utils.datasets import combine, import_dataset
    from mammo_utils.explore import eda
    from mammo_utils.prepare import crop_quality
    from mammo_utils.synthetic.public import WRITERS
    from mammo_utils.tables import read_csv, read_manifest, read_table

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    for name in ("cbis-ddsm", "mias"):
        WRITERS[name](tmp_path / "src" / name, patients=4, seed=3)
        import_dataset(name, tmp_path / "src" / name, tmp_path / name, jobs=1, progress=False)
    data = tmp_path / "data"
    combine([tiny_data, tmp_path / "cbis-ddsm", tmp_path / "mias"], data, progress=False)
    assert not (data / "synthetic_truth.csv").exists() and not (data / "test.csv").exists()
    overview = eda.by_source(read_table(data))  # what notebook 01 shows of a combined folder
    assert set(overview.index) == {tiny_data.name, "cbis-ddsm", "mias"}
    assert overview.loc["cbis-ddsm", "official_test"] > 0
    grid = tmp_path / "grid.yaml"
    grid.write_text("04.loss: [focal, bce]\n")  # not in alphabetical order: the grid's first is the baseline
    fixed = {"image_size": "64x32", "epochs": "1", "max_steps_per_epoch": "2", "workers": "0", "n_splits": "2",
             "holdout_fraction": "0.3", "bootstrap": "20", "05.n_examples": "1"}
    sweep = tmp_path / "sweep"
    assert run_sweep(data, sweep, grid, seeds=[0], params=fixed, progress=False) == 0
    assert capfd.readouterr().out.count("06_submission skipped") == 2  # a combined folder has no test.csv
    # every source in each run's holdout and evaluation
    sources = {tiny_data.name, "cbis-ddsm", "mias"}
    run = sweep / "loss-focal_seed0"
    holdout, folds = read_csv(run / "holdout.csv"), read_csv(run / "folds.csv")
    assert set(holdout.source) == sources  # a holdout from every source...
    cbis_test = set(read_table(data).query("official_split == 'test'").patient_id)
    assert cbis_test and set(holdout[holdout.source == "cbis-ddsm"].patient_id) == cbis_test  # ...CBIS's official one
    assert not set(holdout.patient_id) & set(folds.patient_id)
    assert folds.groupby("patient_id").fold.nunique().max() == 1
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert {r["source"] for r in evaluation["by_source"]["out_of_fold"]} == sources
    assert {r["source"] for r in evaluation["by_source"]["holdout"]} == sources
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["by_source"]) == sources and all("auc" in v and "pf1" in v for v in summary["by_source"].values())
    # on the film scans every lesion centre lies inside the crop
    manifest = read_manifest(next((sweep / "_shared" / "preprocessed").glob("train_*")))
    report = crop_quality.crop_by_source(data, manifest)
    film = report.loc[["cbis-ddsm", "mias"]]
    assert (film.lesions > 0).all() and (film.centres_inside == film.lesions).all() and film.worst_box_kept.min() > 0.9
    table = pd.read_csv(sweep / "comparison.csv")
    assert list(table.combination) == ["loss-focal", "loss-bce", "loss-focal + stacking", "loss-bce + stacking"]
    assert {"holdout_auc_seed_mean", "holdout_auc_seed_mean_ci_low", "holdout_auc_seed_mean_ci_high",
            "oof_auc_seed_mean", "val_auc_seed_mean_ci_low", "holdout_pf1_seed_mean_ci_high"} <= set(table.columns)
    assert table.status.tolist() == ["finished"] * 4
    executed = nbformat.read(sweep / "07_compare.ipynb", as_version=4)
    paired = next(o["data"]["text/plain"] for c in executed.cells if "paired_table" in c.source for o in c.outputs
                  if "text/plain" in o.get("data", {}) and "baseline" in o["data"]["text/plain"])
    assert "loss-focal" in paired.splitlines()[1] and "loss-bce + stacking" in paired  # baseline: the grid's first
    runs = sorted(p.name for p in sweep.iterdir() if (p / "summary.json").exists())
    assert runs == ["loss-bce_seed0", "loss-focal_seed0"]
    # the second combination reused the preprocessing and the folds of the first
    assert (sweep / "loss-focal_seed0" / "notebooks" / "02_preprocess.ipynb").exists()
    assert not (sweep / "loss-bce_seed0" / "notebooks" / "02_preprocess.ipynb").exists()
    assert not (sweep / "loss-bce_seed0" / "notebooks" / "03_sampling.ipynb").exists()
    assert len(list((sweep / "_shared" / "preprocessed").glob("train_*"))) == 1
    for r in runs:
        s = json.loads((sweep / r / "summary.json").read_text())
        assert s["completed"] and "val_auc" in s and "test_auc" not in s
        assert {"selection", "oof", "holdout"} <= set(s["estimates"]) and s["estimates"]["holdout"]["auc_ci"]
    # tracked: the sweep is a parent run, each combination's pipeline a child, each fold a grandchild
    from mlflow import MlflowClient

    client = MlflowClient(store)
    found = client.search_runs([client.get_experiment_by_name("mammo-workbook").experiment_id])
    parent = [r for r in found if r.data.tags.get("kind") == "sweep"]
    assert len(parent) == 1 and "comparison.csv" in {a.path for a in client.list_artifacts(parent[0].info.run_id)}
    pipelines = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    assert sorted(r.info.run_name for r in pipelines) == ["loss-bce_seed0", "loss-focal_seed0"]
    for p in pipelines:
        folds = [r for r in found if r.data.tags.get("mlflow.parentRunId") == p.info.run_id]
        assert sorted(r.info.run_name for r in folds) == ["fold0", "fold1"]
        assert p.data.params["04_train.loss"] in ("bce", "focal") and "holdout_auc" in p.data.metrics
        assert {"summary.json", "notebooks"} <= {a.path for a in client.list_artifacts(p.info.run_id)}
        assert p.info.status == "FINISHED"
    # rerunning skips finished combinations
    stamps = {r: (sweep / r / "summary.json").stat().st_mtime for r in runs}
    assert run_sweep(data, sweep, grid, seeds=[0], params=fixed, progress=False, compare=False) == 0
    out = capfd.readouterr().out
    assert all(f"{r}: finished before, skipped" in out for r in runs) and "06_submission skipped" not in out
    assert {r: (sweep / r / "summary.json").stat().st_mtime for r in runs} == stamps
    # a new grid in the same folder, with a recipe that fails: the sweep goes on, compares the current grid
    # only (loss-focal is stale), lists the failed recipe, and exits 1
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps({"combinations": [{"name": "loss-bce", "04.loss": "bce"},
                                                   {"name": "broken", "03.strategy": "bogus"}]}))
    assert run_sweep(data, sweep, mixed, seeds=[0], params=fixed, progress=False) == 1
    out = capfd.readouterr().out
    assert "broken_seed0 failed; going on" in out and "left out 1 run(s) of earlier grids: loss-focal_seed0" in out
    table = pd.read_csv(sweep / "comparison.csv")
    assert table[["combination", "status"]].values.tolist() == [["loss-bce", "finished"],
                                                                ["loss-bce + stacking", "finished"], ["broken", "failed"]]


def test_held_out_score_reads_labels_probabilities_and_the_submission(tmp_path):
    from mammo_utils.workflow.summary import score_synthetic_test

    data, run = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    run.mkdir()
    pd.DataFrame({"split": ["test"] * 4 + ["train"], "patient_id": [1, 1, 2, 2, 3], "laterality": list("LRLRL"),
                  "cancer": [1, 0, 0, 0, 1]}).to_csv(data / "synthetic_truth.csv", index=False)
    pd.DataFrame({"prediction_id": ["1_L", "1_R", "2_L", "2_R"], "cancer": [1.0, 1.0, 0.0, 0.0]}).to_csv(
        run / "submission.csv", index=False)
    pd.DataFrame({"prediction_id": ["1_L", "1_L", "1_R", "2_L", "2_R"], "pred": [0.9, 0.5, 0.8, 0.1, 0.2]}).to_csv(
        run / "submission_images.csv", index=False)
    got = score_synthetic_test(data, run, {"threshold": 0.5})  # the threshold the submission applied
    # breast means 0.7, 0.8, 0.1, 0.2: the cancer breast ranks below one negative -> AUC 2/3
    assert got["test_auc"] == pytest.approx(2 / 3) and got["test_breasts"] == 4 and got["test_positives"] == 1
    assert got["test_pf1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)  # binary submission: precision 1/2, recall 1
    assert got["test_threshold"] == 0.5 and got["test_sensitivity"] == 1.0 and got["test_specificity"] == 2 / 3


def fake_sweep_run(sweep, name, combination, seed, probs, binary, aggregate="mean", fingerprint="abc"):
    """A finished sweep run as compare reads it: params, summary, submission, image predictions, config,
    and holdout predictions with their fingerprint and threshold."""
    run = sweep / name
    paths.train_dir(run, 0).mkdir(parents=True)
    (run / "sweep_params.json").write_text(json.dumps({"combination": combination, "seed": seed, "params": {}}))
    (run / "summary.json").write_text(json.dumps({"val_auc": 0.7, "val_pf1": 0.3, "val_pr_auc": 0.4,
                                                  "test_breasts": 6, "test_positives": 2}))
    (paths.train_dir(run, 0) / "config.json").write_text(json.dumps({"aggregate": aggregate}))
    breasts = [f"{p}_{s}" for p in (1, 2, 3) for s in "LR"]
    pd.DataFrame({"prediction_id": breasts, "cancer": binary}).to_csv(run / "submission.csv", index=False)
    rows = [(b, p) for b, pair in zip(breasts, probs) for p in pair]  # two images a breast
    pd.DataFrame(rows, columns=["prediction_id", "pred"]).to_csv(run / "submission_images.csv", index=False)
    # the same breasts as a locked holdout, predicted by the fold ensemble, at the OOF threshold 0.5
    labels = {"1_L": 1, "3_R": 1}
    pd.DataFrame([{"prediction_id": b, "patient_id": int(b[0]), "laterality": b[2], "image_id": 10 * k + j,
                   "cancer": labels.get(b, 0), "pred": p} for k, (b, pair) in enumerate(zip(breasts, probs))
                  for j, p in enumerate(pair)]).to_csv(paths.holdout_predictions_csv(run), index=False)
    paths.holdout_json(run).write_text(json.dumps({"fingerprint": fingerprint}))
    (paths.train_dir(run, 0) / "threshold.json").write_text(json.dumps({"threshold": 0.5, "aggregate": aggregate}))
    paths.evaluation_json(run).write_text(json.dumps({"threshold": 0.5, "aggregate": aggregate}))  # notebook 05's
    return run


@pytest.fixture
def sweep_folder(tmp_path):
    data, sweep = tmp_path / "data", tmp_path / "sweep"
    data.mkdir()
    sweep.mkdir()
    pd.DataFrame({"split": "test", "patient_id": [1, 1, 2, 2, 3, 3], "laterality": list("LRLRLR"),
                  "cancer": [1, 0, 0, 0, 0, 1]}).to_csv(data / "synthetic_truth.csv", index=False)
    rng = np.random.default_rng(0)
    for combo in ("a", "b"):
        for seed in (0, 1):
            probs = rng.random((6, 2))
            fake_sweep_run(sweep, f"{combo}_seed{seed}", combo, seed, probs, (probs.mean(1) > 0.5).astype(float))
    return data, sweep


@pytest.mark.parametrize("target, pre", [("holdout", "holdout"), ("synthetic_test", "test")])
def test_comparison_statistics_agree_across_tables(sweep_folder, target, pre):
    """One statistic per name: the paired difference is the difference of the table's seed means,
    for AUC (probabilities) and pF1 (each run's binarized predictions) alike, on the holdout and on the
    synthetic test set through the same code."""
    data, sweep = sweep_folder
    runs = compare.collect(sweep)
    table = compare.combination_table(runs, sweep, data, n_boot=50, target=target).set_index("combination")
    for metric in ("auc", "pf1", "pr_auc"):
        paired = compare.paired_table(runs, sweep, data, "a", metric, n_boot=50, target=target)
        col = f"{pre}_{metric}_seed_mean"
        assert paired.metric.tolist() == [col]
        assert paired["diff"].iloc[0] == pytest.approx(table.loc["b", col] - table.loc["a", col])
    b = compare.target_breasts(data, sweep / "a_seed0", target)
    assert table.loc["a", f"{pre}_pf1_seed_mean"] == pytest.approx(np.mean(
        [metrics.pfbeta(b.cancer, compare.target_breasts(data, sweep / f"a_seed{s}", target).binary) for s in (0, 1)]))
    assert table.loc["a", f"{pre}_breasts"] == 6 and table.loc["a", f"{pre}_positives"] == 2


def test_comparison_refuses_runs_judged_on_different_holdouts(sweep_folder):
    data, sweep = sweep_folder
    paths.holdout_json(sweep / "b_seed1").write_text(json.dumps({"fingerprint": "other"}))
    runs = compare.collect(sweep)
    with pytest.raises(UserError, match=r"different holdouts \(fingerprints \['abc', 'other'\]\)"):
        compare.combination_table(runs, sweep, data, n_boot=10)
    compare.combination_table(runs, sweep, data, n_boot=10, target="synthetic_test")  # the same test set still


def test_held_out_breasts_follow_the_run_and_refuse_gaps(sweep_folder):
    data, sweep = sweep_folder
    images = pd.read_csv(sweep / "a_seed0" / "submission_images.csv")
    expect = images.groupby("prediction_id").pred.max()
    run = fake_sweep_run(sweep, "max_seed0", "max", 0, images.pred.to_numpy().reshape(6, 2), [0.0] * 6, "max")
    got = compare.test_breasts(data, run)
    np.testing.assert_allclose(got.pred, expect.reindex(got.index))  # aggregated as the run trained: max
    images[images.prediction_id != "2_R"].to_csv(run / "submission_images.csv", index=False)
    with pytest.raises(UserError, match="1 test breast.*no prediction: 2_R"):
        compare.test_breasts(data, run)


def test_a_run_is_decided_at_the_threshold_its_notebook_05_chose_not_an_older_folds(sweep_folder):
    """A fold folder left from an earlier recipe keeps its own threshold.json; the comparison once read the
    first fold's file instead of the run's decision."""
    data, sweep = sweep_folder
    run = sweep / "a_seed0"
    (paths.train_dir(run, 0) / "threshold.json").write_text(json.dumps({"threshold": 0.95, "aggregate": "max"}))
    got = compare.holdout_breasts(run)
    images = pd.read_csv(paths.holdout_predictions_csv(run))
    mean = images.groupby("prediction_id").pred.mean().reindex(got.index)
    np.testing.assert_allclose(got.pred, mean)  # aggregated as notebook 05 decided: mean
    assert got.binary.tolist() == (mean >= 0.5).astype(float).tolist() and 0 < got.binary.sum() < len(got)
    for damaged, why in (("{not json", "not valid JSON"), ("[1, 2]", "a JSON object"),
                         ('{"threshold": NaN}', "not a probability"), ('{"threshold": "0.5"}', "not a probability"),
                         ('{"threshold": true}', "not a probability"), ('{"threshold": -3}', "not a probability")):
        paths.evaluation_json(run).write_text(damaged)  # a NaN threshold would call every breast negative
        with pytest.raises(UserError, match=f"evaluation.json.*{why}"):
            compare.holdout_breasts(run)
    paths.evaluation_json(run).unlink()
    with pytest.raises(UserError, match="no threshold in evaluation.json: run notebook 05"):
        compare.holdout_breasts(run)


def test_comparison_figures_draw_intervals_that_exclude_their_point():
    """A percentile interval over patients can lie beside its point estimate (few cancers): the figures
    draw it as it is instead of failing on a negative error bar."""
    from mammo_utils.explore import plots

    row = {"combination": "a", "control": False}
    for pre in ("holdout", "oof"):
        for m in ("auc", "pf1"):
            row.update({f"{pre}_{m}_seed_mean": 0.5, f"{pre}_{m}_seed_mean_ci_low": 0.55,
                        f"{pre}_{m}_seed_mean_ci_high": 0.9})
    fig = plots.comparison(pd.DataFrame([row]))
    segments = fig.axes[0].collections[0].get_segments()
    assert np.allclose(segments[0], [[0.55, 0], [0.9, 0]])
    paired = pd.DataFrame({"combination": ["b"], "diff": [0.1], "ci_low": [0.12], "ci_high": [0.3],
                           "metric": ["auc"], "baseline": ["a"]})
    assert plots.paired_differences(paired).axes[0].get_title().startswith("auc: difference to a")

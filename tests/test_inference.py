"""From test DICOMs to a complete submission: corrupt files, TTA, ensembling rules, wrong splits."""
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from mammo_utils.errors import UserError
from mammo_utils.judge import inference
from mammo_utils.learn import train as T
from mammo_utils.learn.checkpoint import load_checkpoint
from mammo_utils.learn.config import TrainConfig
from mammo_utils.learn.engine import predict_batch
from mammo_utils.learn.sampling import patient_folds


@pytest.fixture(scope="module")
def trained_run(tiny_data, tiny_png, tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    shutil.copytree(tiny_png, root / "png")
    patient_folds(pd.read_csv(tiny_data / "train.csv"), n_splits=3).to_csv(root / "folds.csv", index=False)
    cfg = TrainConfig(run_dir=str(root / "train" / "fold0"), preprocessed=str(root / "png"),
                      folds=str(root / "folds.csv"), model="resnet10t", epochs=1, batch_size=8, workers=0,
                      max_steps_per_epoch=1)
    T.train(cfg, progress=False)
    return root / "train"


def test_submission_matches_sample_ids(tiny_data, trained_run, tmp_path):
    out = tmp_path / "submission.csv"
    sub, report = inference.predict(tiny_data, "test", [trained_run], out=out, jobs=1, binarize=False, progress=False)
    sample = pd.read_csv(tiny_data / "sample_submission.csv")
    written = pd.read_csv(out)
    assert list(written.columns) == ["prediction_id", "cancer"]
    assert list(written.prediction_id) == list(sample.prediction_id)
    assert written.cancer.between(0, 1).all() and written.cancer.notna().all()
    assert report["ok"] and report["failed"] == 0
    binary, _ = inference.predict(tiny_data, "test", [trained_run], jobs=1, progress=False)
    assert set(binary.cancer.unique()) <= {0.0, 1.0}


def test_corrupt_test_dicom_still_complete(tiny_data, trained_run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    test = pd.read_csv(data / "test.csv")
    # one breast loses one image, another breast loses all of its images
    first = test.iloc[0]
    (data / "test_images" / str(first.patient_id) / f"{first.image_id}.dcm").write_text("garbage")
    last_breast = test.prediction_id.iloc[-1]
    for r in test[test.prediction_id == last_breast].itertuples():
        p = data / "test_images" / str(r.patient_id) / f"{r.image_id}.dcm"
        p.write_bytes(p.read_bytes()[:500])
    sub, report = inference.predict(data, "test", [trained_run], out=tmp_path / "s.csv", jobs=2, binarize=True,
                                    progress=False, max_failed=0.5)
    sample = pd.read_csv(data / "sample_submission.csv")
    assert list(sub.prediction_id) == list(sample.prediction_id) and sub.cancer.notna().all()
    ckpt = load_checkpoint(trained_run / "fold0" / "best.pt")
    assert sub.set_index("prediction_id").cancer[last_breast] == pytest.approx(ckpt["data_breast_prevalence"])
    images = pd.read_csv(tmp_path / "s_images.csv")
    n_failed = 1 + (test.prediction_id == last_breast).sum()
    assert images.pred.isna().sum() == n_failed == report["failed"] and report["ok"]


def test_too_many_failures_exit_non_zero_with_a_complete_submission(tiny_data, trained_run, tmp_path):
    from mammo_utils.__main__ import main

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    shutil.rmtree(data / "test_images")  # every image missing
    out = tmp_path / "sub.csv"
    assert main(["predict", "--data-dir", str(data), "--run-dirs", str(trained_run), "--out-path", str(out),
                 "--jobs", "1"]) == 1
    sub = pd.read_csv(out)
    assert len(sub) == len(pd.read_csv(data / "sample_submission.csv")) and sub.cancer.notna().all()


def test_submission_is_built_from_the_predicted_csv(tiny_data, trained_run, tmp_path):
    # train.csv next to a test sample_submission: refused, not silently scored on the sample's breasts
    with pytest.raises(UserError, match="list different breasts"):
        inference.predict(tiny_data, "train", [trained_run], jobs=1, progress=False)
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "sample_submission.csv").unlink()
    sub, _ = inference.predict(data, "train", [trained_run], jobs=1, progress=False, max_failed=1.0)
    train = pd.read_csv(data / "train.csv")
    assert set(sub.prediction_id) == set(train.patient_id.astype(str) + "_" + train.laterality)


def test_make_submission_rules():
    preds = pd.DataFrame({"prediction_id": ["1_L", "1_L", "1_R", "2_L"], "pred": [0.2, 0.6, np.nan, 0.1]})
    settings = dict(threshold=0.35, aggregate="mean", prevalence=0.02)
    sub = inference.make_submission(preds, settings, order=["2_L", "1_R", "1_L", "3_R"]).set_index("prediction_id")
    assert sub.cancer.to_dict() == {"2_L": 0.0, "1_R": 0.02, "1_L": 1.0, "3_R": 0.02}
    maxed = inference.make_submission(preds, {**settings, "aggregate": "max"}, binarize=False).set_index("prediction_id")
    assert maxed.cancer["1_L"] == 0.6


class CornerModel(torch.nn.Module):
    """Logit = 10 x the top-left pixel: a vertical flip moves the bottom-left pixel there."""

    def forward(self, x):
        return {"cancer": 10 * x[:, 0, 0, 0]}


def test_tta_averages_the_image_and_its_vertical_flip():
    x = torch.zeros(3, 1, 8, 4)
    x[:, 0, 0, 0], x[:, 0, -1, 0] = 1.0, -1.0
    plain = predict_batch([CornerModel()], x)
    tta = predict_batch([CornerModel()], x, tta=True)
    torch.testing.assert_close(plain, torch.full((3,), torch.sigmoid(torch.tensor(10.0)).item()))
    torch.testing.assert_close(tta, torch.full((3,), 0.5))  # mean of sigmoid(10) and sigmoid(-10)
    two = predict_batch([CornerModel(), CornerModel()], x, tta=True)
    torch.testing.assert_close(two, tta)  # averaging is over models x views, never a sum


def test_ensembling_rules(trained_run, tmp_path):
    from mammo_utils.judge.evaluate import save_decision

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(trained_run / "fold0", a)
    shutil.copytree(trained_run / "fold0", b)
    save_decision(a, 0.2, "mean")
    save_decision(b, 0.4, "mean")
    ens = inference.load_ensemble([a / "best.pt", b / "best.pt"], "cpu")
    assert len(ens.models) == 2 and ens.threshold == pytest.approx(0.3) and ens.aggregate == "mean"
    save_decision(b, 0.4, "max")
    with pytest.raises(UserError, match="aggregates breasts by 'max'"):
        inference.load_ensemble([a / "best.pt", b / "best.pt"], "cpu")
    save_decision(b, 0.4, "mean")
    ckpt = torch.load(b / "best.pt", weights_only=True)
    ckpt["preprocess"]["size"] = [128, 64]
    torch.save(ckpt, b / "best.pt")
    with pytest.raises(UserError, match="other preprocessing"):
        inference.load_ensemble([a / "best.pt", b / "best.pt"], "cpu")


def test_threshold_json_overrides_training_threshold(trained_run, tmp_path):
    from mammo_utils.judge.evaluate import save_decision

    run = tmp_path / "r"
    shutil.copytree(trained_run / "fold0", run)
    ckpt = load_checkpoint(run / "best.pt")
    assert inference.decision_settings(run / "best.pt", ckpt)[0] == pytest.approx(ckpt["threshold"])
    save_decision(run, 0.123, "max")
    assert inference.decision_settings(run / "best.pt", ckpt) == (0.123, "max")


def test_unwritable_output_fails_before_predicting(tiny_data, trained_run, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # the output folder cannot be created (also as root, unlike a chmod)
    monkeypatch.setattr(inference, "predict_images", lambda *a, **k: pytest.fail("predicted before checking"))
    with pytest.raises(UserError, match="not writable"):
        inference.predict(tiny_data, "test", [trained_run], out=blocker / "s.csv", jobs=1, progress=False)


def test_cli_predict(tiny_data, trained_run, tmp_path):
    from mammo_utils.__main__ import main

    out = tmp_path / "sub.csv"
    assert main(["predict", "--data", str(tiny_data), "--runs", str(trained_run), "--out", str(out), "--jobs", "1",
                 "--tta"]) == 0  # the documented option names still work as aliases
    sub = pd.read_csv(out)
    assert list(sub.prediction_id) == list(pd.read_csv(tiny_data / "sample_submission.csv").prediction_id)


def test_each_test_image_is_decoded_once(tiny_data, trained_run, monkeypatch):
    calls = []
    original = inference.DicomDataset.__getitem__

    def counting(self, i):
        calls.append(i)
        return original(self, i)

    monkeypatch.setattr(inference.DicomDataset, "__getitem__", counting)
    inference.predict(tiny_data, "test", [trained_run], jobs=0, progress=True)  # in-process loading, progress bar on
    assert sorted(calls) == list(range(len(pd.read_csv(tiny_data / "test.csv"))))

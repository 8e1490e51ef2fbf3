"""From test DICOMs to a complete submission, corrupt files included."""
import shutil

import numpy as np
import pandas as pd
import pytest

from mammo_utils import inference
from mammo_utils import train as T
from mammo_utils.preprocess import PreprocessConfig, run_preprocess
from mammo_utils.sampling import patient_folds


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    run_preprocess(tiny_data, "train", root / "png", PreprocessConfig(size=(64, 32)), jobs=1, progress=False)
    patient_folds(pd.read_csv(tiny_data / "train.csv"), n_splits=3).to_csv(root / "folds.csv", index=False)
    cfg = T.TrainConfig(run_dir=str(root / "train" / "fold0"), preprocessed=str(root / "png"),
                        folds=str(root / "folds.csv"), model="resnet10t", epochs=1, batch_size=8, workers=0,
                        max_steps_per_epoch=1, drop_path_rate=0.0)
    T.train(cfg, progress=False)
    return root / "train"


def test_submission_matches_sample_ids(tiny_data, trained_run, tmp_path):
    out = tmp_path / "submission.csv"
    sub = inference.predict(tiny_data / "test.csv", tiny_data / "test_images", [trained_run], out=out, jobs=1,
                            binarize=False, progress=False)
    sample = pd.read_csv(tiny_data / "sample_submission.csv")
    written = pd.read_csv(out)
    assert list(written.columns) == ["prediction_id", "cancer"]
    assert list(written.prediction_id) == list(sample.prediction_id)
    assert written.cancer.between(0, 1).all() and written.cancer.notna().all()
    binary = inference.predict(tiny_data / "test.csv", tiny_data / "test_images", [trained_run], jobs=0,
                               progress=False)
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
    sub = inference.predict(data / "test.csv", data / "test_images", [trained_run], out=tmp_path / "s.csv", jobs=2,
                            binarize=True, progress=False)
    sample = pd.read_csv(data / "sample_submission.csv")
    assert list(sub.prediction_id) == list(sample.prediction_id) and sub.cancer.notna().all()
    ckpt = T.load_checkpoint(trained_run / "fold0" / "best.pt")
    assert sub.set_index("prediction_id").cancer[last_breast] == pytest.approx(ckpt["train_breast_prevalence"])
    images = pd.read_csv(tmp_path / "s_images.csv")
    assert images.pred.isna().sum() == 1 + (test.prediction_id == last_breast).sum()


def test_make_submission_rules():
    preds = pd.DataFrame({"prediction_id": ["1_L", "1_L", "1_R", "2_L"], "pred": [0.2, 0.6, np.nan, 0.1]})
    settings = dict(threshold=0.35, aggregate="mean", prevalence=0.02)
    sub = inference.make_submission(preds, settings, order=["2_L", "1_R", "1_L", "3_R"]).set_index("prediction_id")
    assert sub.cancer.to_dict() == {"2_L": 0.0, "1_R": 0.02, "1_L": 1.0, "3_R": 0.02}
    maxed = inference.make_submission(preds, {**settings, "aggregate": "max"}, binarize=False).set_index("prediction_id")
    assert maxed.cancer["1_L"] == 0.6


def test_threshold_json_overrides_training_threshold(trained_run, tmp_path):
    from mammo_utils.evaluate import save_decision

    run = tmp_path / "r"
    shutil.copytree(trained_run / "fold0", run)
    ckpt = T.load_checkpoint(run / "best.pt")
    assert inference.decision_settings(run / "best.pt", ckpt)[0] == pytest.approx(ckpt["threshold"])
    save_decision(run, 0.123, "max")
    assert inference.decision_settings(run / "best.pt", ckpt) == (0.123, "max")


def test_cli_predict(tiny_data, trained_run, tmp_path):
    from mammo_utils.__main__ import main

    out = tmp_path / "sub.csv"
    assert main(["predict", "--data", str(tiny_data), "--runs", str(trained_run), "--out", str(out), "--jobs", "0",
                 "--tta"]) == 0
    sub = pd.read_csv(out)
    assert list(sub.prediction_id) == list(pd.read_csv(tiny_data / "sample_submission.csv").prediction_id)

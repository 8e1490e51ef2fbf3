"""The synthetic dataset: exact RSNA schema, every machine trait, determinism, learnable lesions."""
import filecmp

import numpy as np
import pandas as pd
import pydicom
from conftest import TINY

from mammo_utils.dicom import read_image
from mammo_utils.synthetic import TEST_COLUMNS, TRAIN_COLUMNS, write_dataset


def test_schema(tiny_data):
    train = pd.read_csv(tiny_data / "train.csv")
    test = pd.read_csv(tiny_data / "test.csv")
    sub = pd.read_csv(tiny_data / "sample_submission.csv")
    assert list(train.columns) == TRAIN_COLUMNS
    assert list(test.columns) == TEST_COLUMNS
    assert list(sub.columns) == ["prediction_id", "cancer"]
    assert list(sub.prediction_id) == list(test.prediction_id.drop_duplicates())
    assert set(train.site_id) == {1, 2} and set(train.laterality) == {"L", "R"}
    assert train.image_id.is_unique and not set(train.patient_id) & set(test.patient_id)
    for pid, g in train.groupby("patient_id"):
        pairs = set(zip(g.laterality, g.view))
        assert {("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")} <= pairs, pid
        assert (tiny_data / "train_images" / str(pid)).is_dir()
    assert train.cancer.sum() > 0 and set(train.cancer) == {0, 1}
    assert (train[train.cancer == 1].biopsy == 1).all()


def test_machine_traits(tiny_data, tiny_truth):
    traits = set()
    for r in tiny_truth.drop_duplicates("machine_id").itertuples():
        ds = pydicom.dcmread(tiny_data / f"{r.split}_images" / str(r.patient_id) / f"{r.image_id}.dcm",
                             stop_before_pixels=True)
        traits.add(("syntax", str(ds.file_meta.TransferSyntaxUID)))
        traits.add(("photometric", ds.PhotometricInterpretation))
        traits.add(("bits", ds.BitsStored))
        traits.add(("voi", ds.get("VOILUTFunction", "none")))
        if isinstance(ds.get("WindowCenter"), pydicom.multival.MultiValue):
            traits.add(("multi_window", True))
        assert ds.Modality == "MG" and ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    assert {("syntax", "1.2.840.10008.1.2.4.90"), ("syntax", "1.2.840.10008.1.2.4.70"),
            ("syntax", "1.2.840.10008.1.2.5")} <= traits
    assert {("photometric", "MONOCHROME1"), ("photometric", "MONOCHROME2"), ("voi", "SIGMOID"),
            ("multi_window", True)} <= traits
    assert len({v for k, v in traits if k == "bits"}) >= 3


def test_deterministic(tmp_path, tiny_data):
    other = tmp_path / "again"
    write_dataset(other, **TINY)
    for name in ("train.csv", "test.csv", "synthetic_truth.csv"):
        assert filecmp.cmp(tiny_data / name, other / name, shallow=False), name
    train = pd.read_csv(tiny_data / "train.csv")
    for r in train.head(6).itertuples():
        rel = f"train_images/{r.patient_id}/{r.image_id}.dcm"
        assert filecmp.cmp(tiny_data / rel, other / rel, shallow=False), rel


def test_lesion_is_visible_in_both_views(tiny_data, tiny_truth):
    cancers = tiny_truth[(tiny_truth.cancer == 1) & tiny_truth.view.isin(["CC", "MLO"])]
    assert len(cancers) >= 4
    contrasts = []
    for r in cancers.itertuples():
        img = read_image(tiny_data / f"{r.split}_images" / str(r.patient_id) / f"{r.image_id}.dcm")
        y, x, rad = int(r.lesion_y), int(r.lesion_x), max(2, int(r.lesion_r))
        core = img[max(0, y - rad // 2): y + rad // 2 + 1, max(0, x - rad // 2): x + rad // 2 + 1].mean()
        ring = img[max(0, y - 3 * rad): y + 3 * rad, max(0, x - 3 * rad): x + 3 * rad].mean()
        contrasts.append(core - ring)
    assert np.median(contrasts) > 0.05


def test_cli_synth(tmp_path):
    from mammo_utils.__main__ import main

    assert main(["synth", "--out", str(tmp_path / "d"), "--patients", "3", "--size", "96x80", "--jobs", "1"]) == 0
    assert len(pd.read_csv(tmp_path / "d" / "train.csv")) >= 12


def test_default_held_out_set_is_sized_for_the_estimate():
    from mammo_utils.synthetic import default_test_patients

    assert default_test_patients(200) == 200   # the main job: ~400 test breasts, not 200
    assert default_test_patients(400) == 200   # the sweep: capped, the estimate does not need more
    assert default_test_patients(1) == 2

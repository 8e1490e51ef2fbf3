"""Public datasets in: each importer on a small copy laid out as the dataset ships, then combine."""
import json
import os

import numpy as np
import pandas as pd
import pytest

from mammo_utils import paths
from mammo_utils.datasets import import_dataset, read_lesions
from mammo_utils.errors import UserError
from mammo_utils.synthetic.public import WRITERS, snapshot
from mammo_utils.tables import read_table

DATASETS = sorted(WRITERS)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """Every dataset written in its own layout and imported once: {name: (src, out, truth, record, before)}."""
    root = tmp_path_factory.mktemp("public")
    out = {}
    for name in DATASETS:
        src = root / "downloads" / name
        truth = WRITERS[name](src)
        before = snapshot(src)
        record = import_dataset(name, src, root / "imported" / name, jobs=1, progress=False)
        out[name] = (src, root / "imported" / name, truth, record, before)
    return out


@pytest.mark.parametrize("name", DATASETS)
def test_import_matches_the_truth_and_leaves_the_source_alone(imported, name):
    src, out, truth, record, before = imported[name]
    assert snapshot(src) == before, "the source folder was written to"
    table = read_table(out, "train")
    merged = truth.merge(table, on="image_id", suffixes=("_truth", ""), validate="one_to_one")
    assert len(merged) == len(truth) == len(table)
    for col in ("patient_id", "laterality", "view", "cancer", "official_split", "source"):
        got = merged[col].fillna("").astype(str)
        want = merged[f"{col}_truth"].fillna("").astype(str)
        assert (got == want).all(), f"{name}: {col} differs: {merged.loc[got != want, [col, col + '_truth']].head()}"
    assert table.patient_id.map(type).eq(str).all() and table.image_id.map(type).eq(str).all()
    for r in table.itertuples():  # every image is a readable DICOM where the RSNA layout puts it
        assert paths.dicom_path(out, "train", r.patient_id, r.image_id).is_file()
    assert record["counts"]["images"] == len(truth)
    assert record["counts"]["cancer_breasts"] == truth.groupby(["patient_id", "laterality"]).cancer.max().sum()
    assert record["label_mapping"] and json.loads((out / "import.json").read_text())["label"] == record["label"]


@pytest.mark.parametrize("name", [n for n in DATASETS if n != "cmmd"])  # CMMD has no boxes
def test_every_lesion_centre_lies_in_its_box(imported, name):
    _, out, truth, _, _ = imported[name]
    lesions = read_lesions(out)
    assert len(lesions), f"{name}: no lesion boxes"
    assert ((lesions.x0 >= 0) & (lesions.y0 >= 0) & (lesions.x0 <= lesions.x1) & (lesions.y0 <= lesions.y1)).all()
    with_lesion = truth.dropna(subset=["lesion_y"])
    found = 0
    for r in with_lesion.itertuples():
        boxes = lesions[lesions.image_id == r.image_id]
        inside = (boxes.x0 <= r.lesion_x + 1) & (r.lesion_x <= boxes.x1 + 1) & \
                 (boxes.y0 <= r.lesion_y + 1) & (r.lesion_y <= boxes.y1 + 1)
        found += bool(inside.any())
    assert found == len(with_lesion), f"{name}: {len(with_lesion) - found} lesion centres outside every box"


def test_vindr_boxes_are_clamped_and_mias_rows_flipped(imported):
    _, out, truth, record, _ = imported["vindr"]
    assert read_lesions(out).x0.min() == 0.0  # the fixture's -3.5 was clamped
    assert any("1 clamped" in n for n in record["notes"])
    _, out, truth, _, _ = imported["mias"]
    row = truth[truth.image_id == "mdb001"].iloc[0]
    box = read_lesions(out).query("image_id == 'mdb001' and pathology == 'MALIGNANT'").iloc[0]
    assert abs((box.y0 + box.y1) / 2 - row.lesion_y) <= 1.0  # Info.txt's y counts from the bottom


def test_mias_is_wrapped_as_dicom_with_pixels_unchanged(imported):
    import cv2

    from mammo_utils.dicom import read_stored

    src, out, _, _, _ = imported["mias"]
    stored = read_stored(paths.dicom_path(out, "train", "mias001", "mdb001"))[0]
    assert np.array_equal(stored, cv2.imread(str(src / "mdb001.pgm"), cv2.IMREAD_UNCHANGED))


def test_dicom_sources_are_linked_and_copy_copies(imported, tmp_path):
    src, out, truth, _, _ = imported["inbreast"]
    first = read_table(out, "train").iloc[0]
    dst = paths.dicom_path(out, "train", first.patient_id, first.image_id)
    assert dst.is_symlink() and src in dst.resolve().parents
    import_dataset("inbreast", src, tmp_path / "copied", copy=True, jobs=1, progress=False)
    copied = paths.dicom_path(tmp_path / "copied", "train", first.patient_id, first.image_id)
    assert copied.is_file() and not copied.is_symlink()


def test_rerun_is_idempotent_and_labels_are_changeable(imported, tmp_path):
    src, out, _, record, _ = imported["inbreast"]
    table = (out / "train.csv").read_bytes()
    again = import_dataset("inbreast", src, out, jobs=1, progress=False)
    assert (out / "train.csv").read_bytes() == table and again["counts"] == record["counts"]
    wider = import_dataset("inbreast", src, tmp_path / "wider", label="4", jobs=1, progress=False)
    assert wider["counts"]["cancer_breasts"] == record["counts"]["cancer_breasts"] + 1  # the 4a breast
    assert wider["label"] == "4" and "4a" in wider["label_mapping"]
    with pytest.raises(UserError, match="not a inbreast mapping"):
        import_dataset("inbreast", src, tmp_path / "bad", label="birads5", progress=False)


def test_missing_and_unreadable_files_are_skipped_and_named(tmp_path):
    src = tmp_path / "vindr"
    truth = WRITERS["vindr"](src, studies=2)
    gone, broken = truth.iloc[0], truth.iloc[1]
    (src / "images" / gone.patient_id / f"{gone.image_id}.dicom").unlink()
    (src / "images" / broken.patient_id / f"{broken.image_id}.dicom").write_bytes(b"not a dicom")
    record = import_dataset("vindr", src, tmp_path / "out", progress=False)
    reasons = {os.path.basename(s["file"]): s["reason"] for s in record["skipped"]}
    assert reasons[f"{gone.image_id}.dicom"] == "file not found"
    assert f"{broken.image_id}.dicom" in reasons
    assert record["counts"]["images"] == len(truth) - 2 and record["counts"]["skipped"] == 2


def test_unknown_layout_and_destination_inside_source_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="expected VinDr-Mammo's breast-level_annotations.csv"):
        import_dataset("vindr", tmp_path / "empty", tmp_path / "out", progress=False)
    with pytest.raises(UserError, match="mass_case_description_train_set.csv"):
        import_dataset("cbis-ddsm", tmp_path / "empty", tmp_path / "out", progress=False)
    WRITERS["mias"](tmp_path / "mias", patients=1)
    with pytest.raises(UserError, match="inside the source folder"):
        import_dataset("mias", tmp_path / "mias", tmp_path / "mias" / "imported", progress=False)


def test_cbis_joins_by_series_uid_when_nbia_metadata_is_there(tmp_path):
    truth = WRITERS["cbis-ddsm"](tmp_path / "src", nbia_metadata=True)
    record = import_dataset("cbis-ddsm", tmp_path / "src", tmp_path / "out", jobs=1, progress=False)
    assert any("joined by series UID" in n for n in record["notes"])
    assert record["counts"]["lesion_boxes"] == len(truth)


def test_cli_import_and_combine_keep_ids_unique(imported, tmp_path, capsys):
    from mammo_utils.__main__ import main

    src, _, truth, _, _ = imported["mias"]
    assert main(["import-dataset", "mias", str(src), "--out", str(tmp_path / "mias")]) == 0
    assert "label: malignant" in capsys.readouterr().out
    _, vindr, vtruth, _, _ = imported["vindr"]
    assert main(["combine", str(tmp_path / "mias"), str(vindr), "--out", str(tmp_path / "both")]) == 0
    both = read_table(tmp_path / "both", "train")
    assert set(both.source) == {"mias", "vindr"} and both.image_id.is_unique
    assert both.patient_id.str.startswith(("mias-", "vindr-")).all()
    assert len(both) == len(truth) + len(vtruth)
    lesions = read_lesions(tmp_path / "both")
    assert set(lesions.image_id) <= set(both.image_id) and len(lesions) == len(read_lesions(vindr)) + 2
    for r in both.itertuples():
        assert paths.dicom_path(tmp_path / "both", "train", r.patient_id, r.image_id).resolve().is_file()


def test_cbis_mask_of_another_shape_is_rescaled_to_its_image(tmp_path):
    """A few CBIS masks differ from their image by some rows: the largest file is the mask, its box rescaled."""
    from mammo_utils.dicom import read_stored
    from mammo_utils.dicom.write import write_dicom

    truth = WRITERS["cbis-ddsm"](tmp_path / "src", patients=1)
    mask_file = sorted((tmp_path / "src").rglob("*_LEFT_CC_1/*/*/1-1.dcm"))[0]
    mask = read_stored(mask_file)[0]
    write_dicom(mask_file, mask[:-16], {"BitsStored": 8})  # 16 rows short of the image
    record = import_dataset("cbis-ddsm", tmp_path / "src", tmp_path / "out", jobs=1, progress=False)
    assert any("differ in shape" in n for n in record["notes"])
    box = read_lesions(tmp_path / "out").query("image_id.str.endswith('LEFT_CC')").iloc[0]
    row = truth[truth.image_id.str.endswith("LEFT_CC")].iloc[0]
    assert box.x0 <= row.lesion_x <= box.x1 and box.y0 <= row.lesion_y <= box.y1


def test_viewer_browses_imported_string_ids(imported):
    from mammo_utils.explore import viewer as V

    _, out, truth, _, _ = imported["cbis-ddsm"]
    v = V.PatientViewer(out, display_px=128, tile_px=(120, 96))
    assert all(isinstance(p, str) for p in v.patients) and "P_00001" in v.patients
    screen = v.select("P_00001").render()
    assert len(v.views) == 2 and screen.max() > 100
    yellow = lambda img: ((img[..., 0] > 200) & (img[..., 1] > 180) & (img[..., 2] < 60)).sum()  # noqa: E731
    assert yellow(v.view_rgb(0)) > 20  # lesions.csv's box is drawn
    assert yellow(v.set_overlays(lesions=False).view_rgb(0)) == 0
    with pytest.raises(UserError, match="not in"):
        v.select("P_99999")


def test_cancer_is_a_property_of_the_breast(tmp_path):
    """INbreast gives BI-RADS per image: a breast with one BI-RADS 5 view is a cancer breast in both views."""
    truth = WRITERS["inbreast"](tmp_path / "src")
    csv = tmp_path / "src" / "INbreast.csv"
    rows = pd.read_csv(csv, sep=";", dtype=str)
    mlo = rows.index[(rows["Bi-Rads"] == "5") & (rows.View == "MLO")]
    rows.loc[mlo, "Bi-Rads"] = "1"  # only the CC view of that breast says 5 now
    rows.to_csv(csv, sep=";", index=False)
    import_dataset("inbreast", tmp_path / "src", tmp_path / "out", jobs=1, progress=False)
    table = read_table(tmp_path / "out")
    breast = table[table.image_id.isin(rows.loc[mlo, "File Name"])].prediction_id.iloc[0]
    assert table[table.prediction_id == breast].cancer.tolist() == [1, 1]
    assert table.cancer.sum() == truth.cancer.sum()

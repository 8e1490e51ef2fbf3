"""Real datasets' quirks: one line where a traceback was, and no bad data imported in silence."""
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mammo_utils import paths
from mammo_utils.__main__ import main
from mammo_utils.datasets import import_dataset, read_lesions
from mammo_utils.errors import UserError
from mammo_utils.synthetic.public import WRITERS


def one_error_line(capsys, *needles) -> str:
    """The one ``error:`` line, last on stderr (after any progress bar), and no traceback."""
    text = capsys.readouterr().err
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert "Traceback" not in text and len(errors) == 1 and text.strip().endswith(errors[0]), text
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


# ---- 3. one line, not a traceback ----------------------------------------------------------------

def test_vindr_repeated_row_is_skipped_and_named(tmp_path):
    """A repeated breast-level row once raised a TypeError in the box clamp."""
    src = tmp_path / "src"
    truth = WRITERS["vindr"](src, studies=2)
    csv = src / "breast-level_annotations.csv"
    rows = pd.read_csv(csv, dtype=str)
    boxed = pd.read_csv(src / "finding_annotations.csv", dtype=str).dropna(subset=["xmin"]).image_id.iloc[0]
    i = rows.index[rows.image_id == boxed][0]
    pd.concat([rows, rows.iloc[[i]]]).to_csv(csv, index=False)
    record = import_dataset("vindr", src, tmp_path / "out", jobs=1, progress=False)
    assert record["counts"]["images"] == len(truth)
    assert [(s["row"], s["column"], s["value"]) for s in record["skipped"]] == [(len(rows) + 2, "image_id", boxed)]
    assert f"repeats row {i + 2}'s image" in record["skipped"][0]["reason"]
    assert (read_lesions(tmp_path / "out").image_id == boxed).sum() == 1


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a workbook"])
def test_cmmd_unreadable_workbook_is_one_line_then_its_csv_export_is_used(tmp_path, capsys, content):
    src = tmp_path / "src"
    truth = WRITERS["cmmd"](src)
    sheet = pd.read_excel(src / "CMMD_clinicaldata_revision.xlsx", dtype=str)
    (src / "CMMD_clinicaldata_revision.xlsx").write_bytes(content)
    assert main(["import-dataset", "cmmd", str(src), "--out", str(tmp_path / "out"), "--jobs", "1"]) == 2
    one_error_line(capsys, "CMMD_clinicaldata_revision.xlsx: cannot be read as a workbook", "export the sheet as CSV")
    assert not (tmp_path / "out").exists()
    (src / "exports").mkdir()
    sheet.to_csv(src / "exports" / "clinical sheet.csv", index=False)
    record = import_dataset("cmmd", src, tmp_path / "out", jobs=1, progress=False)
    assert any("cannot be read" in n and "clinical sheet.csv" in n for n in record["notes"])
    assert record["counts"]["cancer_breasts"] == truth.groupby(["patient_id", "laterality"]).cancer.max().sum() == 1


def test_cbis_empty_side_cell_takes_the_folders_side(tmp_path):
    """An empty 'left or right breast' cell once raised an AttributeError."""
    src = tmp_path / "src"
    truth = WRITERS["cbis-ddsm"](src, patients=2)
    csv = src / "mass_case_description_train_set.csv"
    rows = pd.read_csv(csv, dtype=str)
    rows.loc[0, "left or right breast"] = ""
    rows.loc[1, "image view"] = ""
    rows.to_csv(csv, index=False)
    record = import_dataset("cbis-ddsm", src, tmp_path / "out", jobs=1, progress=False)
    table = pd.read_csv(tmp_path / "out" / "train.csv", dtype=str).set_index("image_id")
    assert (table.loc[truth.image_id, "laterality"].to_numpy() == truth.laterality.to_numpy()).all()
    assert (table.loc[truth.image_id, "view"].to_numpy() == truth.view.to_numpy()).all()
    assert any("2 image(s) whose 'left or right breast' or 'image view' cells are empty" in n for n in record["notes"])


# ---- 4. no bad data imported in silence ----------------------------------------------------------

@pytest.mark.parametrize("syntax", ["explicit", "rle"])
def test_a_truncated_dicom_is_skipped(tmp_path, syntax):
    """A copy cut short passes a 132-byte 'DICM' check and a header read; its pixel data does not fit."""
    from mammo_utils.dicom import read_stored
    from mammo_utils.dicom.write import write_dicom

    src = tmp_path / "src"
    truth = WRITERS["vindr"](src, studies=2)
    cut, other = truth.iloc[0], truth.iloc[1]
    for r in (cut, other):  # both re-encoded in the syntax under test
        f = src / "images" / r.patient_id / f"{r.image_id}.dicom"
        write_dicom(f, read_stored(f)[0], {"BitsStored": 12}, syntax=syntax)
    f = src / "images" / cut.patient_id / f"{cut.image_id}.dicom"
    f.write_bytes(f.read_bytes()[:-100])
    record = import_dataset("vindr", src, tmp_path / "out", jobs=1, progress=False)
    assert record["counts"]["images"] == len(truth) - 1
    assert [(s["file"], "truncated" in s["reason"]) for s in record["skipped"]] == [(str(f), True)]
    assert paths.dicom_path(tmp_path / "out", "train", other.patient_id, other.image_id).is_symlink()


def test_mias_boxes_are_ordered_clamped_and_empty_ones_dropped(tmp_path):
    src = tmp_path / "src"
    WRITERS["mias"](src, patients=3, shape=(320, 320))
    info = src / "Info.txt"
    lines = ["mdb002 F CIRC B 300 100 40",    # runs past the right edge: clamped
             "mdb004 F CIRC B 100 100 -20",   # a negative radius: x0 > x1, ordered
             "mdb005 F CIRC B 900 900 10",    # a centre beyond the image: nothing left, dropped
             "mdb006 F CIRC B 100 100 0"]     # no area: dropped
    info.write_text(info.read_text() + "".join(line + "\n" for line in lines))
    record = import_dataset("mias", src, tmp_path / "out", jobs=1, progress=False)
    lesions = read_lesions(tmp_path / "out")
    assert ((lesions.x0 >= 0) & (lesions.y0 >= 0) & (lesions.x1 <= 320) & (lesions.y1 <= 320)).all()
    assert ((lesions.x1 > lesions.x0) & (lesions.y1 > lesions.y0)).all()
    assert set(lesions.image_id) == {"mdb001", "mdb002", "mdb004"}
    assert lesions.query("image_id == 'mdb004'")[["x0", "x1"]].values.tolist() == [[80.0, 120.0]]
    assert record["counts"]["lesion_boxes_fixed"] == {"clamped": 2, "dropped_no_area": 2, "reordered": 1}
    assert any("2 dropped no area" in n for n in record["notes"])


def test_folds_on_a_table_without_cancer_is_one_line(tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    df = pd.read_csv(data / "train.csv", dtype=str)
    df.assign(cancer=0).to_csv(data / "train.csv", index=False)
    assert main(["folds", "--data", str(data), "--out", str(tmp_path / "run" / "folds.csv")]) == 2
    one_error_line(capsys, "none of the", "has cancer = 1", "--label")
    assert not (tmp_path / "run" / "folds.csv").exists()


def test_folds_with_fewer_cancer_patients_than_folds_warn():
    from mammo_utils.learn.sampling import make_folds

    df = pd.DataFrame({"patient_id": [f"p{i}" for i in range(10)], "image_id": [f"i{i}" for i in range(10)],
                       "laterality": "L", "cancer": [1, 1] + [0] * 8})
    with pytest.warns(UserWarning, match="only 2 cancer patient"):
        folds = make_folds(df, n_splits=3)
    assert sorted(folds.fold.unique()) == [0, 1, 2]
    with pytest.raises(UserError, match="none of the 10 patients"):
        make_folds(df.assign(cancer=0), n_splits=3)


# ---- 4. a label that cannot be read is not a negative --------------------------------------------

def _spoil_vindr(src, truth):
    csv = src / "breast-level_annotations.csv"
    rows = pd.read_csv(csv, dtype=str)
    rows.loc[0, "breast_birads"], rows.loc[1, "breast_birads"] = "", "BI-RADS X"
    rows.to_csv(csv, index=False)
    return [(csv.name, 2, "breast_birads", ""), (csv.name, 3, "breast_birads", "BI-RADS X")], set(rows.image_id[:2])


def _spoil_inbreast(src, truth):
    csv = src / "INbreast.csv"
    rows = pd.read_csv(csv, sep=";", dtype=str)
    rows.loc[0, "Bi-Rads"], rows.loc[1, "Bi-Rads"] = "", "7"
    rows.to_csv(csv, sep=";", index=False)
    return [(csv.name, 2, "Bi-Rads", ""), (csv.name, 3, "Bi-Rads", "7")], set(rows["File Name"][:2])


def _spoil_cmmd(src, truth):
    sheet = src / "CMMD_clinicaldata_revision.xlsx"
    rows = pd.read_excel(sheet, dtype=str)  # row 2: D1-0001 L Malignant; row 3: D1-0002 R Benign
    rows.loc[1, "classification"] = ""
    extra = rows.iloc[[0]].assign(classification="Probably")  # beside a Malignant row: still a cancer
    pd.concat([rows, extra]).to_excel(sheet, index=False)
    gone = truth[(truth.patient_id == "D1-0002") & (truth.laterality == "R")].image_id
    return [(sheet.name, 3, "classification", ""), (sheet.name, 4, "classification", "Probably")], set(gone)


def _spoil_cbis(src, truth):
    csv = next(src.rglob("calc_case_description_train_set.csv"))  # patient 1, BENIGN, CC and MLO rows
    rows = pd.read_csv(csv, dtype=str)
    i = rows.index[rows["image view"] == "CC"][0]
    rows.loc[i, "pathology"] = ""
    rows.to_csv(csv, index=False)
    gone = truth[(truth.patient_id == rows.patient_id[i].strip()) & (truth.view == "CC")].image_id
    return [(csv.name, i + 2, "pathology", "")], set(gone)


def _spoil_mias(src, truth):
    info = src / "Info.txt"
    lines = info.read_text().splitlines()
    n = lines.index("mdb003 D CALC B")
    lines[n] = "mdb003 D CALC"  # an abnormality with no severity
    info.write_text("\n".join(lines) + "\n")
    return [(info.name, n + 1, "severity", "")], {"mdb003"}


@pytest.mark.parametrize("name, spoil", [("vindr", _spoil_vindr), ("inbreast", _spoil_inbreast),
                                         ("cmmd", _spoil_cmmd), ("cbis-ddsm", _spoil_cbis), ("mias", _spoil_mias)])
def test_an_empty_or_unknown_label_cell_leaves_its_images_out_by_row(name, spoil, tmp_path):
    """An empty or unknown BI-RADS, pathology, classification or severity once became cancer 0 in silence."""
    src, out = tmp_path / "src", tmp_path / "out"
    truth = WRITERS[name](src)
    expected, gone = spoil(src, truth)
    record = import_dataset(name, src, out, jobs=1, progress=False)
    named = [(Path(s["file"]).name, s["row"], s["column"], s["value"]) for s in record["skipped"] if "row" in s]
    assert named == expected
    assert all("cannot be read" in s["reason"] for s in record["skipped"])
    table = pd.read_csv(out / "train.csv", dtype=str)
    assert gone and not gone & set(table.image_id) and len(table) == len(truth) - len(gone)
    kept = truth[~truth.image_id.isin(gone)].set_index("image_id").cancer
    assert table.set_index("image_id").cancer.astype(int).sort_index().equals(kept.sort_index())


def test_an_image_id_that_differs_from_another_only_by_case_is_skipped(tmp_path):
    """On macOS or Windows ``abc.dcm`` and ``ABC.dcm`` are one file: the second image would replace the first."""
    src, out = tmp_path / "src", tmp_path / "out"
    truth = WRITERS["vindr"](src, studies=1)
    csv = src / "breast-level_annotations.csv"
    rows = pd.read_csv(csv, dtype=str)
    first, other = rows.iloc[0], rows.iloc[1]
    shadow = first.image_id.upper()
    shutil.copy(src / "images" / other.study_id / f"{other.image_id}.dicom",
                src / "images" / first.study_id / f"{shadow}.dicom")
    pd.concat([rows, rows.iloc[[1]].assign(image_id=shadow)]).to_csv(csv, index=False)
    record = import_dataset("vindr", src, out, jobs=1, progress=False)
    reasons = [s["reason"] for s in record["skipped"] if s["file"].endswith(f"{shadow}.dicom")]
    assert len(reasons) == 1 and f"differs from {first.study_id}/{first.image_id} only by case" in reasons[0]
    table = pd.read_csv(out / "train.csv", dtype=str)
    assert sorted(table.image_id) == sorted(truth.image_id)


def test_a_mias_rerun_removes_the_image_it_now_leaves_out(tmp_path):
    """mini-MIAS writes its DICOMs itself: an image skipped on a rerun (its severity cell emptied) once stayed
    in train_images, in no table. A file a user put there stays."""
    src, out = tmp_path / "src", tmp_path / "out"
    WRITERS["mias"](src)
    import_dataset("mias", src, out, jobs=1, progress=False)
    wrapped = paths.dicom_path(out, "train", "mias002", "mdb003")
    mine = wrapped.parent / "notes.txt"
    assert wrapped.is_file()
    mine.write_text("mine")
    _spoil_mias(src, None)
    import_dataset("mias", src, out, jobs=1, progress=False)
    assert not wrapped.exists() and mine.read_text() == "mine"
    assert "mdb003" not in set(pd.read_csv(out / "train.csv", dtype=str).image_id)


def test_a_cmmd_row_without_a_side_and_an_inbreast_image_with_an_unreadable_row_leave_their_images_out(tmp_path):
    """A Malignant CMMD row whose LeftRight is empty once made the patient's images normal; an INbreast image
    listed twice, once with an empty Bi-Rads, was imported as its readable row said."""
    src = tmp_path / "cmmd"
    truth = WRITERS["cmmd"](src, patients=3)
    sheet = src / "CMMD_clinicaldata_revision.xlsx"
    rows = pd.read_excel(sheet, dtype=str)
    pd.concat([rows, rows.iloc[[0]].assign(ID1="D1-0003", LeftRight="")]).to_excel(sheet, index=False)
    record = import_dataset("cmmd", src, tmp_path / "cmmd_out", jobs=1, progress=False)
    assert [(s["row"], s["column"]) for s in record["skipped"] if "row" in s] == [(len(rows) + 2, "LeftRight")]
    table = pd.read_csv(tmp_path / "cmmd_out" / "train.csv", dtype=str)
    assert "D1-0003" not in set(table.patient_id) and len(table) == len(truth) - (truth.patient_id == "D1-0003").sum()

    src = tmp_path / "inbreast"
    truth = WRITERS["inbreast"](src)
    csv = src / "INbreast.csv"
    rows = pd.read_csv(csv, sep=";", dtype=str)
    last = rows.iloc[[-1]]
    assert last["Bi-Rads"].item() == "1"
    pd.concat([rows, last.assign(**{"Bi-Rads": ""})]).to_csv(csv, sep=";", index=False)
    record = import_dataset("inbreast", src, tmp_path / "inbreast_out", jobs=1, progress=False)
    assert sorted(s["row"] for s in record["skipped"]) == [len(rows) + 1, len(rows) + 2]  # both rows of the image
    table = pd.read_csv(tmp_path / "inbreast_out" / "train.csv", dtype=str)
    assert last["File Name"].item() not in set(table.image_id) and len(table) == len(truth) - 1


def test_combine_refuses_images_that_differ_only_by_case(tmp_path, capsys):
    """A dataset folder made by hand can hold abc.dcm and ABC.dcm: combined, they would be one file on macOS."""
    WRITERS["vindr"](tmp_path / "vsrc", studies=1)
    WRITERS["mias"](tmp_path / "msrc")
    import_dataset("vindr", tmp_path / "vsrc", tmp_path / "v", copy=True, jobs=1, progress=False)
    import_dataset("mias", tmp_path / "msrc", tmp_path / "m", jobs=1, progress=False)
    table = pd.read_csv(tmp_path / "v" / "train.csv", dtype=str)
    first = table.iloc[0]
    shadow = first.image_id.upper()
    shutil.copy(paths.dicom_path(tmp_path / "v", "train", first.patient_id, first.image_id),
                paths.dicom_path(tmp_path / "v", "train", first.patient_id, shadow))
    pd.concat([table, table.iloc[[0]].assign(image_id=shadow, laterality="R" if first.laterality == "L" else "L")]
              ).to_csv(tmp_path / "v" / "train.csv", index=False)
    assert main(["combine", str(tmp_path / "v"), str(tmp_path / "m"), "--out", str(tmp_path / "both")]) == 2
    one_error_line(capsys, "differ only by case", shadow)
    assert not (tmp_path / "both").exists() or not list((tmp_path / "both").rglob("*.dcm"))

"""Importing as a hostile user would: ids that climb out of --out, a user's files in --out, bad cells.

Every test hashes every file outside ``--out`` (and every user file inside it) before and after, and
compares them byte for byte: the import may write its own folder and nothing else.
"""
import hashlib
import json
import os
import shutil

import pandas as pd
import pytest

from mammo_utils import paths
from mammo_utils.__main__ import main
from mammo_utils.datasets import combine, import_dataset
from mammo_utils.errors import UserError
from mammo_utils.synthetic.public import WRITERS


def digest(root, skip=None) -> dict:
    """Every entry below ``root`` (``skip`` left out): a link's target, a file's SHA-256, a folder's mark."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        if skip is not None and os.path.abspath(dirpath) == os.path.abspath(skip):
            dirs[:] = []
            continue
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            if skip is not None and os.path.abspath(p) == os.path.abspath(skip):
                continue
            if os.path.islink(p):
                out[p] = "link:" + os.readlink(p)
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    out[p] = hashlib.sha256(f.read()).hexdigest()
            else:
                out[p] = "dir"
    return out


def one_error_line(capsys, *needles) -> str:
    """The one ``error:`` line, last on stderr (after any progress bar), and no traceback."""
    text = capsys.readouterr().err
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert "Traceback" not in text and len(errors) == 1 and text.strip().endswith(errors[0]), text
    err = errors[0]
    for n in needles:
        assert n in err, (n, err)
    return err


def everything_inside(out):
    """Every link and file the import made resolves to a path lexically below ``out`` (its own name)."""
    for dirpath, _, files in os.walk(out):
        for name in files:
            assert os.path.commonpath([os.path.abspath(out), os.path.abspath(os.path.join(dirpath, name))]) == \
                os.path.abspath(out)


# ---- 1. no id becomes a path ---------------------------------------------------------------------

@pytest.mark.parametrize("value,problem", [
    ("../x", "separator"), ("a\\b", "separator"), ("..", "'..'"), ("a..b", "'..'"), (".hidden", "starts with '.'"),
    ("-rf", "starts with '-'"), ("x\x00y", "control"), ("CON", "Windows"), ("lpt1.txt", "Windows"), ("a:b", "only"),
    ("a.", "ends with"), ("", "empty"), ("  ", "empty"), (float("nan"), "empty"), ("x" * 201, "longer")])
def test_an_id_that_would_name_another_path_is_refused(value, problem, tmp_path):
    assert problem in paths.id_problem(value)
    with pytest.raises(UserError, match="cannot name a file"):
        paths.dicom_path(tmp_path, "train", value, "img")
    with pytest.raises(UserError, match="cannot name a file"):
        paths.png_relpath("p", value)
    assert paths.id_problem("P_00001") is None and paths.id_problem("D1-0001_1-1") is None
    assert paths.dicom_path(tmp_path, "train", 10006, "1.2.3") == tmp_path / "train_images" / "10006" / "1.2.3.dcm"


def test_vindr_ids_that_climb_are_skipped_and_named(tmp_path, capsys):
    """An image_id of ``../../../userfile`` once linked the user's ``userfile.dcm`` to itself (destroying it)
    and a climbing one linked files outside --out; now such rows are skipped, named, and nothing outside changes."""
    src, out = tmp_path / "src", tmp_path / "out"
    truth = WRITERS["vindr"](src, studies=2)
    first = truth.iloc[0]
    user_dicom = src / "images" / first.patient_id / f"{first.image_id}.dicom"
    shutil.copy(user_dicom, tmp_path / "userfile.dcm")  # the user's own DICOM, beside the folders
    shutil.copy(user_dicom, tmp_path / "escaped.dicom")
    csv = src / "breast-level_annotations.csv"
    rows = pd.read_csv(csv, dtype=str)
    rows.loc[0, "image_id"] = "../../../userfile"   # source and destination are the user's file itself
    rows.loc[1, "image_id"] = "../../../escaped"    # a link at tmp/escaped.dcm, outside --out
    rows.loc[2, "study_id"] = "../../../../victim"
    rows.to_csv(csv, index=False)
    before = digest(tmp_path, skip=out)
    for _ in range(2):  # the rerun too
        assert main(["import-dataset", "vindr", str(src), "--out", str(out), "--jobs", "1"]) == 0
        assert digest(tmp_path, skip=out) == before
        everything_inside(out)
    record = json.loads((out / "import.json").read_text())
    named = {(s["row"], s["column"], s["value"]) for s in record["skipped"] if "row" in s}
    assert named == {(2, "image_id", "../../../userfile"), (3, "image_id", "../../../escaped"),
                     (4, "study_id", "../../../../victim")}
    assert all(s["file"] == str(csv) and "cannot name a file" in s["reason"] for s in record["skipped"])
    assert record["counts"]["images"] == len(truth) - 3
    err = capsys.readouterr().err
    assert "breast-level_annotations.csv row 2 image_id '../../../userfile': image_id cannot name a file" in err
    assert "warning: vindr: 3 table row(s) skipped" in err


def test_vindr_empty_id_cell_is_skipped_and_named(tmp_path, capsys):
    """An empty cell is read as NaN: it once passed as the id 'nan' (or broke the file's path with a TypeError)."""
    src, out = tmp_path / "src", tmp_path / "out"
    truth = WRITERS["vindr"](src, studies=2)
    csv = src / "breast-level_annotations.csv"
    rows = pd.read_csv(csv, dtype=str)
    rows.loc[0, "study_id"] = ""
    rows.to_csv(csv, index=False)
    assert main(["import-dataset", "vindr", str(src), "--out", str(out), "--jobs", "1"]) == 0
    record = json.loads((out / "import.json").read_text())
    assert [(s["row"], s["column"], s["reason"]) for s in record["skipped"]] == \
        [(2, "study_id", "study_id cannot name a file: it is empty")]
    assert record["counts"]["images"] == len(truth) - 1 and not (out / "train_images" / "nan").exists()
    assert "row 2 study_id" in capsys.readouterr().err


def test_cbis_patient_id_that_climbs_is_skipped(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    (tmp_path / "userdata2").mkdir()
    (tmp_path / "userdata2" / "thesis.txt").write_text("years of work")
    WRITERS["cbis-ddsm"](src, patients=2)
    csv = src / "mass_case_description_train_set.csv"
    rows = pd.read_csv(csv, dtype=str)
    rows.loc[0, "patient_id"] = "../../../userdata2"
    rows.to_csv(csv, index=False)
    before = digest(tmp_path, skip=out)
    with pytest.warns(UserWarning, match="1 table row"):
        record = import_dataset("cbis-ddsm", src, out, jobs=1, progress=False)
    assert digest(tmp_path, skip=out) == before
    everything_inside(out)
    assert {(s["file"], s["row"], s["column"], s["value"]) for s in record["skipped"] if "row" in s} == \
        {(str(csv), 2, "patient_id", "../../../userdata2")}


def test_combine_refuses_a_source_name_that_would_name_a_path(tmp_path, capsys):
    for name in ("inbreast", "mias"):
        WRITERS[name](tmp_path / "src" / name, patients=1)
        import_dataset(name, tmp_path / "src" / name, tmp_path / name, jobs=1, progress=False)
    table = pd.read_csv(tmp_path / "mias" / "train.csv", dtype=str)
    table.assign(source="../../up").to_csv(tmp_path / "mias" / "train.csv", index=False)
    before = digest(tmp_path, skip=tmp_path / "both")
    assert main(["combine", str(tmp_path / "inbreast"), str(tmp_path / "mias"), "--out", str(tmp_path / "both")]) == 2
    one_error_line(capsys, "source '../../up' cannot name a file")
    assert digest(tmp_path, skip=tmp_path / "both") == before and not (tmp_path / "both").exists()


def test_a_table_with_a_climbing_id_is_refused_in_one_line(tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    df = pd.read_csv(data / "train.csv", dtype=str)
    df.loc[3, "image_id"] = "a..b"
    df.to_csv(data / "train.csv", index=False)
    assert main(["folds", "--data", str(data), "--out", str(tmp_path / "folds.csv")]) == 2
    one_error_line(capsys, "train.csv", "image_id", "'a..b'", "row(s) 5", "'..'")


# ---- 2. never overwrite: --out that already holds files ------------------------------------------

@pytest.fixture
def vindr_src(tmp_path):
    src = tmp_path / "src"
    return src, WRITERS["vindr"](src, studies=2)


def test_out_holding_a_users_files_is_refused_and_left_alone(vindr_src, tmp_path, capsys):
    src, truth = vindr_src
    out = tmp_path / "mine"
    first = truth.iloc[0]
    mine = paths.dicom_path(out, "train", first.patient_id, first.image_id)  # where the import would link
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"my own scan")
    (out / "train.csv").write_text("patient_id,image_id\nmine,mine\n")
    before = digest(tmp_path)
    assert main(["import-dataset", "vindr", str(src), "--out", str(out)]) == 2
    one_error_line(capsys, str(out), "already holds files", "not an earlier import of vindr")
    assert digest(tmp_path) == before


def test_out_naming_a_file_is_one_line(vindr_src, tmp_path, capsys):
    src, _ = vindr_src
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["import-dataset", "vindr", str(src), "--out", str(tmp_path / "notes.txt")]) == 2
    one_error_line(capsys, "notes.txt is a file, not a folder")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_rerun_into_an_earlier_import_of_the_same_source_is_idempotent(vindr_src, tmp_path, capsys):
    src, _ = vindr_src
    out = tmp_path / "out"
    import_dataset("vindr", src, out, jobs=1, progress=False)
    (out / "my_notes.txt").write_text("notes beside the import")
    first = digest(out)
    import_dataset("vindr", src, out, jobs=1, progress=False)
    assert digest(out) == first  # same bytes, same links, the user's notes kept
    # the same folder as an import of another dataset, or of another copy of it: refused
    other = tmp_path / "other"
    shutil.copytree(src, other)
    assert main(["import-dataset", "vindr", str(other), "--out", str(out)]) == 2
    one_error_line(capsys, "not an earlier import of vindr from " + str(other.resolve()))
    WRITERS["inbreast"](tmp_path / "inb", patients=1)
    assert main(["import-dataset", "inbreast", str(tmp_path / "inb"), "--out", str(out)]) == 2
    one_error_line(capsys, "not an earlier import of inbreast")
    assert digest(out) == first


def test_rerun_never_replaces_a_users_file_at_an_image_path(vindr_src, tmp_path, capsys):
    """The user replaced one of the import's links with their own file: a rerun refuses and keeps it."""
    src, truth = vindr_src
    out = tmp_path / "out"
    import_dataset("vindr", src, out, jobs=1, progress=False)
    first = truth.iloc[0]
    link = paths.dicom_path(out, "train", first.patient_id, first.image_id)
    link.unlink()
    link.write_bytes(b"my edited scan")
    before = digest(tmp_path)
    assert main(["import-dataset", "vindr", str(src), "--out", str(out), "--copy"]) == 2
    one_error_line(capsys, "not its own earlier output", str(link))
    assert digest(tmp_path) == before


def test_mias_rerun_leaves_a_users_file_at_an_image_path(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    WRITERS["mias"](src, patients=2)
    import_dataset("mias", src, out, jobs=1, progress=False)
    stray = paths.dicom_path(out, "train", "mias002", "mdb003")
    stray.unlink()
    stray.write_bytes(b"mine")
    table = pd.read_csv(out / "train.csv", dtype=str)
    table[table.image_id != "mdb003"].to_csv(out / "train.csv", index=False)  # an import that never wrote it
    record = import_dataset("mias", src, out, jobs=1, progress=False)
    assert stray.read_bytes() == b"mine"
    assert any("mdb003" in s["file"] and "did not write it" in s["reason"] for s in record["skipped"])


def test_combine_into_a_users_folder_is_refused_and_a_rerun_is_idempotent(tmp_path, capsys):
    for name in ("inbreast", "mias"):
        WRITERS[name](tmp_path / "src" / name, patients=1)
        import_dataset(name, tmp_path / "src" / name, tmp_path / name, jobs=1, progress=False)
    parts = [tmp_path / "inbreast", tmp_path / "mias"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "train.csv").write_text("my table")
    before = digest(tmp_path)
    assert main(["combine", *map(str, parts), "--out", str(tmp_path / "mine")]) == 2
    one_error_line(capsys, "already holds files", "not an earlier import of these folders")
    assert digest(tmp_path) == before
    assert main(["combine", *map(str, parts), "--out", str(tmp_path / "mine" / "train.csv")]) == 2
    one_error_line(capsys, "train.csv is a file, not a folder")
    assert digest(tmp_path) == before
    combine(parts, tmp_path / "both", progress=False)
    first = digest(tmp_path / "both")
    combine(parts, tmp_path / "both", progress=False)
    assert digest(tmp_path / "both") == first


# ---- every dataset, as a hostile user would: climbing ids in its tables, a user's folder as --out ----

def _climb(name: str, src):
    """Put a climbing id into the cell each dataset's importer reads an id (or a file name) from."""
    if name == "vindr":
        csv = src / "breast-level_annotations.csv"
        rows = pd.read_csv(csv, dtype=str)
        rows.loc[0, "study_id"], rows.loc[1, "image_id"] = "../../../../mine", "../../../mine"
        rows.to_csv(csv, index=False)
    elif name == "cbis-ddsm":
        csv = src / "mass_case_description_train_set.csv"
        rows = pd.read_csv(csv, dtype=str)
        rows.loc[0, "patient_id"] = "../../../mine"
        rows.to_csv(csv, index=False)
    elif name == "cmmd":
        sheet = pd.read_excel(src / "CMMD_clinicaldata_revision.xlsx", dtype=str)
        sheet.loc[0, "ID1"] = "../../../mine"
        sheet.to_excel(src / "CMMD_clinicaldata_revision.xlsx", index=False)
    elif name == "inbreast":
        csv = src / "INbreast.csv"
        rows = pd.read_csv(csv, sep=";", dtype=str)
        rows.loc[0, "File Name"] = "../../../mine"
        rows.to_csv(csv, sep=";", index=False)
    else:
        (src / "Info.txt").write_text((src / "Info.txt").read_text() + "mdb002/../../../mine F NORM\n")


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_hostile_import_touches_nothing_outside_out(name, tmp_path, capsys):
    src, out, mine = tmp_path / "src", tmp_path / "out", tmp_path / "mine"
    WRITERS[name](src, **({"studies": 2} if name == "vindr" else {"patients": 2}))
    _climb(name, src)
    mine.mkdir()
    (mine / "train.csv").write_text("my table")           # a user's folder given as --out...
    (tmp_path / "mine.dcm").write_bytes(b"my scan")        # ...and files an id climbs to
    (tmp_path / "mine.dicom").write_bytes(b"my other scan")
    before = digest(tmp_path)
    assert main(["import-dataset", name, str(src), "--out", str(mine), "--jobs", "1"]) == 2
    one_error_line(capsys, "already holds files")
    assert digest(tmp_path) == before
    for _ in range(2):  # an import and its rerun write below --out and nowhere else
        assert main(["import-dataset", name, str(src), "--out", str(out), "--jobs", "1"]) == 0
        assert digest(tmp_path, skip=out) == before
        everything_inside(out)

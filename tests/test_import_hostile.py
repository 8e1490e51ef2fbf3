"""More of a hostile user's inputs to the importers: files that are empty or not text, names that look like
a mini-MIAS reference, a clinical sheet that says two things about one breast, an import stopped midway.

Each case ends in one line (an ``error:`` with exit 2, or a skipped row named in import.json) and leaves
every file outside ``--out`` byte for byte as it was.
"""
import importlib
import json
import os
import shutil

import pandas as pd
import pytest
from test_import_safety import digest, one_error_line

from mammo_utils import paths
from mammo_utils.__main__ import main
from mammo_utils.datasets import import_dataset
from mammo_utils.synthetic.public import WRITERS

UNREADABLE = {"empty": b"", "binary": bytes(range(128, 256)) * 4}
CSVS = [("vindr", "breast-level_annotations.csv"), ("vindr", "finding_annotations.csv"), ("vindr", "metadata.csv"),
        ("cbis-ddsm", "mass_case_description_train_set.csv"), ("inbreast", "INbreast.csv")]


def small(name, src):
    """The smallest fixture of each dataset's layout."""
    sizes = {"vindr": {"studies": 1}, "cbis-ddsm": {"patients": 2}, "inbreast": {"patients": 1}}
    return WRITERS[name](src, **sizes.get(name, {}))


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
@pytest.mark.parametrize("name,csv", CSVS)
def test_an_empty_or_binary_csv_is_one_line(name, csv, kind, tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    small(name, src)
    (src / csv).write_bytes(UNREADABLE[kind])
    before = digest(tmp_path)
    assert main(["import-dataset", name, str(src), "--out", str(out), "--jobs", "1"]) == 2
    err = one_error_line(capsys, csv)
    assert "not a readable CSV" in err or "expected column(s)" in err  # INbreast's reader replaces bad bytes
    assert digest(tmp_path) == before and not out.exists()


def test_combine_or_folds_on_an_empty_train_csv_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    paths.split_csv(tmp_path / "empty", "train").write_bytes(b"")
    assert main(["folds", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "f" / "folds.csv")]) == 2
    one_error_line(capsys, "train.csv", "not a readable CSV")


@pytest.mark.parametrize("name", ["mdb002-x", "mdb\uff10\uff10\uff12"])
def test_mias_a_name_that_only_looks_like_a_reference_is_not_imported(name, tmp_path, capsys):
    """``mdb002-x`` once matched the reference pattern and broke the patient number with a ValueError;
    ``mdb００２`` (fullwidth digits) stopped the whole import with a line that named no file."""
    src, out = tmp_path / "src", tmp_path / "out"
    truth = WRITERS["mias"](src, patients=1)
    shutil.copy(src / "mdb002.pgm", src / f"{name}.pgm")
    with open(src / "Info.txt", "a") as f:
        f.write(f"{name} F NORM\n")
    before = digest(tmp_path)
    assert main(["import-dataset", "mias", str(src), "--out", str(out), "--jobs", "1"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    table = pd.read_csv(out / "train.csv", dtype=str)
    assert sorted(table.image_id) == sorted(truth.image_id)
    assert name in " ".join(json.loads((out / "import.json").read_text())["notes"])  # not in Info.txt
    assert {k: v for k, v in digest(tmp_path).items() if not k.startswith(str(out))} == before


def test_cmmd_a_breast_whose_rows_disagree_stays_malignant(tmp_path):
    """A second row for a Malignant breast (a repeated or edited row saying Benign) once replaced the first:
    the cancer breast was imported as 0, without a word."""
    src, out = tmp_path / "src", tmp_path / "out"
    truth = WRITERS["cmmd"](src, patients=2)
    sheet = src / "CMMD_clinicaldata_revision.xlsx"
    rows = pd.read_excel(sheet, dtype=str)
    benign = rows[rows.classification == "Malignant"].assign(classification="Benign")
    pd.concat([rows, benign]).to_excel(sheet, index=False)
    record = import_dataset("cmmd", src, out, jobs=1, progress=False)
    table = pd.read_csv(out / "train.csv", dtype=str)
    cancer = table[table.cancer == "1"][["patient_id", "laterality"]].drop_duplicates()
    assert cancer.values.tolist() == truth[truth.cancer == 1][["patient_id", "laterality"]].drop_duplicates().values.tolist()
    assert any("rows disagree" in n and "D1-0001" in n for n in record["notes"])


def relative(folder) -> dict:
    return {os.path.relpath(k, folder): v for k, v in digest(folder).items()}


def stop_after(real, n: int):
    """``real`` that raises KeyboardInterrupt (Ctrl-C) once it has run ``n`` times."""
    calls = []

    def stopping(*args, **kwargs):
        if len(calls) == n:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)
    return stopping


@pytest.mark.parametrize("copy", [False, True])
def test_an_import_stopped_midway_is_finished_by_a_rerun(copy, tmp_path, monkeypatch, capsys):
    """Stopped while it placed images, an import left them without its import.json: the rerun took the folder
    for a user's and refused it, so the only way on was to delete it."""
    from mammo_utils.datasets import common

    src, out, fresh = tmp_path / "src", tmp_path / "out", tmp_path / "fresh"
    WRITERS["vindr"](src, studies=2)
    flag = ["--copy"] if copy else []
    assert main(["import-dataset", "vindr", str(src), "--out", str(fresh), "--jobs", "1"] + flag) == 0
    before = digest(tmp_path, skip=out)
    with monkeypatch.context() as m:
        m.setattr(common, "place", stop_after(common.place, 3))
        assert main(["import-dataset", "vindr", str(src), "--out", str(out), "--jobs", "1"] + flag) == 130
    assert 0 < len(list((out / "train_images").rglob("*.dcm"))) < 8 and not (out / "train.csv").exists()
    assert main(["import-dataset", "vindr", str(src), "--out", str(out), "--jobs", "1"] + flag) == 0
    assert "error" not in capsys.readouterr().err
    assert relative(out) == relative(fresh) and digest(tmp_path, skip=out) == before


def test_a_mias_import_stopped_midway_is_finished_by_a_rerun(tmp_path, monkeypatch):
    from mammo_utils.datasets import mias

    src, out, fresh = tmp_path / "src", tmp_path / "out", tmp_path / "fresh"
    WRITERS["mias"](src, patients=2)
    import_dataset("mias", src, fresh, jobs=1, progress=False)

    def half(fn, items, *args, **kwargs):
        [fn(str(t)) for t in list(items)[:2]]
        raise KeyboardInterrupt
    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(mias, "parallel_map", half)
        import_dataset("mias", src, out, jobs=1, progress=False)
    import_dataset("mias", src, out, jobs=1, progress=False)
    assert relative(out) == relative(fresh)
    assert json.loads((out / "import.json").read_text())["skipped"] == []


def test_a_combine_stopped_midway_is_finished_by_a_rerun(tmp_path, monkeypatch):
    combine_module = importlib.import_module("mammo_utils.datasets.combine")  # the package exports the function

    parts = []
    for name in ("vindr", "inbreast"):
        small(name, tmp_path / name)
        parts.append(str(tmp_path / f"{name}_in"))
        import_dataset(name, tmp_path / name, parts[-1], jobs=1, progress=False)
    combine_module.combine(parts, tmp_path / "fresh", progress=False, jobs=1)
    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(combine_module, "place", stop_after(combine_module.place, 3))
        combine_module.combine(parts, tmp_path / "out", progress=False, jobs=1)
    combine_module.combine(parts, tmp_path / "out", progress=False, jobs=1)
    assert relative(tmp_path / "out") == relative(tmp_path / "fresh")


@pytest.mark.parametrize("value", ["../../../victim/x.dcm", ""])
def test_cbis_an_image_path_cell_outside_the_folders_is_named_by_file_and_row(value, tmp_path, capsys):
    """Such a row was skipped naming the cell's text as if it were a file ('nan' for an empty cell), without
    the CSV, its row or a warning."""
    src, out = tmp_path / "src", tmp_path / "out"
    truth = small("cbis-ddsm", src)
    csv = src / "mass_case_description_train_set.csv"
    rows = pd.read_csv(csv, dtype=str)
    rows.loc[0, "image file path"] = value
    rows.to_csv(csv, index=False)
    before = digest(tmp_path)
    assert main(["import-dataset", "cbis-ddsm", str(src), "--out", str(out), "--jobs", "1"]) == 0
    skipped = json.loads((out / "import.json").read_text())["skipped"]
    assert [(s["file"], s["row"], s["column"], s["value"]) for s in skipped] == [(str(csv), 2, "image file path", value)]
    assert f"{csv} row 2 image file path" in capsys.readouterr().err
    assert len(pd.read_csv(out / "train.csv")) == len(truth) - 1
    assert {k: v for k, v in digest(tmp_path).items() if not k.startswith(str(out))} == before


def test_a_link_looping_back_up_the_source_is_walked_once(tmp_path):
    """A link from inside the dataset back to its top (``CMMD/loop -> ..``) listed every file once per turn
    of the loop (40 times, to the system's limit): CMMD reported 480 duplicate images for its 12."""
    src, out = tmp_path / "src", tmp_path / "out"
    truth = small("cmmd", src)
    os.symlink("..", src / "CMMD" / "loop")
    before = digest(tmp_path)
    record = import_dataset("cmmd", src, out, jobs=1, progress=False)
    assert record["counts"]["images"] == len(truth) and record["counts"]["duplicate_images_dropped"] == 0
    assert {k: v for k, v in digest(tmp_path).items() if not k.startswith(str(out))} == before


@pytest.mark.parametrize("copy", [False, True])
def test_a_rerun_never_writes_through_a_folder_link_inside_out(copy, tmp_path, capsys):
    """A patient folder of an earlier import replaced by a link to a folder elsewhere: the rerun wrote its
    images there, and with --copy replaced a user's file of an image's name in it."""
    src, out, elsewhere = tmp_path / "src", tmp_path / "out", tmp_path / "elsewhere"
    WRITERS["vindr"](src, studies=1)
    flag = ["--copy"] if copy else []
    assert main(["import-dataset", "vindr", str(src), "--out", str(out), "--jobs", "1"] + flag) == 0
    patient = min((out / "train_images").iterdir())
    image = min(patient.iterdir()).name
    shutil.rmtree(patient)
    elsewhere.mkdir()
    if copy:
        (elsewhere / image).write_bytes(b"a user's file")
    os.symlink(elsewhere, patient)
    capsys.readouterr()
    before = digest(tmp_path, skip=out)
    assert main(["import-dataset", "vindr", str(src), "--out", str(out), "--jobs", "1"] + flag) == 2
    one_error_line(capsys, str(patient), "outside --out")
    assert digest(tmp_path, skip=out) == before


def test_cbis_a_truncated_roi_mask_is_named_with_its_problem(tmp_path):
    """A cut-short mask left only 'no file near the full image's shape; no mask box': not the file, not why."""
    src, out = tmp_path / "src", tmp_path / "out"
    small("cbis-ddsm", src)
    mask = min(p for p in src.rglob("1-1.dcm") if "ROI mask" in str(p))
    mask.write_bytes(mask.read_bytes()[:1000])
    record = import_dataset("cbis-ddsm", src, out, jobs=1, progress=False)
    assert [s["reason"][:18] for s in record["skipped"] if s["file"] == str(mask)] == ["file is truncated:"]


@pytest.mark.parametrize("column", ["view_position", "laterality"])
def test_vindr_an_empty_side_or_view_cell_skips_its_row_by_name(column, tmp_path, capsys):
    """An empty view_position cell stopped the import with an AttributeError; an empty laterality was named 'nan'."""
    src, out = tmp_path / "src", tmp_path / "out"
    truth = WRITERS["vindr"](src, studies=1)
    csv = src / "breast-level_annotations.csv"
    rows = pd.read_csv(csv, dtype=str)
    rows.loc[0, column] = ""
    rows.to_csv(csv, index=False)
    assert main(["import-dataset", "vindr", str(src), "--out", str(out), "--jobs", "1"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    skipped = json.loads((out / "import.json").read_text())["skipped"]
    assert [(s["row"], s["column"], s["value"]) for s in skipped] == [(2, column, "")]
    assert len(pd.read_csv(out / "train.csv")) == len(truth) - 1


@pytest.mark.parametrize("copy", [False, True])
def test_a_rerun_after_the_source_lost_a_row_leaves_what_a_new_import_would(copy, tmp_path):
    """The image of a row gone from the source stayed in train_images (in no table) after the rerun."""
    src, out, fresh = tmp_path / "src", tmp_path / "out", tmp_path / "fresh"
    WRITERS["vindr"](src, studies=2)
    import_dataset("vindr", src, out, copy=copy, jobs=1, progress=False)
    csv = src / "breast-level_annotations.csv"
    rows = pd.read_csv(csv, dtype=str)
    study = rows.study_id[0]
    rows[rows.study_id != study].to_csv(csv, index=False)
    import_dataset("vindr", src, out, copy=copy, jobs=1, progress=False)
    import_dataset("vindr", src, fresh, copy=copy, jobs=1, progress=False)
    assert relative(out) == relative(fresh) and not (out / "train_images" / study).exists()

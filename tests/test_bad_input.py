"""Bad input, probed as a careless user would: one clear line, a non-zero exit, nothing touched or lost."""
import hashlib
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pydicom
import pytest

from mammo_utils.__main__ import main
from mammo_utils.dicom import write_dicom


def tree_digest(folder):
    """Every file's relative path and bytes: proof that nothing was written, changed or deleted."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def one_error_line(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "Traceback" not in err and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)
    return err


@pytest.fixture
def user_folder(tiny_data, tmp_path):
    """A user's own folder without train.csv: DICOMs at ids the generator also uses, their test.csv, notes."""
    folder = tmp_path / "my_data"
    shutil.copytree(tiny_data / "test_images", folder / "test_images")
    shutil.copy(tiny_data / "test.csv", folder / "test.csv")
    shutil.copy(tiny_data / "sample_submission.csv", folder / "sample_submission.csv")
    (folder / "notes.txt").write_text("my notes")
    return folder


def test_pipeline_never_writes_synthetic_data_into_a_users_folder(user_folder, tmp_path, capsys):
    before = tree_digest(user_folder)
    assert main(["pipeline", "--data", str(user_folder), "--run", str(tmp_path / "run")]) == 2
    one_error_line(capsys, str(user_folder), "train.csv", "empty folder")
    assert tree_digest(user_folder) == before
    assert main(["synth", "--out", str(user_folder), "--patients", "4"]) == 2
    assert tree_digest(user_folder) == before


def test_pipeline_parameters_are_checked_before_any_notebook_runs(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    for args, needle in [(["-p", "99.epochs", "3"], "no notebook starts with '99'"),
                         (["-p", "04.epochz", "3"], "has no parameter 'epochz'"),
                         (["-p", "epochs", "ten"], "must be int"),
                         (["-p", "04.epochs", "ten"], "must be int"),
                         (["--from", "99"], "--from 99"),
                         (["--only", "7"], "--only 7")]:
        assert main(["pipeline", "--data", str(tiny_data), "--run", str(run), *args]) == 2, args
        one_error_line(capsys, needle)
    assert not (run / "summary.json").exists() and not (run / "notebooks").exists()


@pytest.mark.parametrize("edit,needle", [
    (lambda df: df.assign(patient_id=df.patient_id.astype(object).where(df.index != 3, "")), "patient_id is empty in row(s) 5"),
    (lambda df: pd.concat([df, df.iloc[[2]]]), "image_id is not unique"),
    (lambda df: df.assign(laterality=df.laterality.where(df.index != 1, "B")), "laterality must be L or R"),
    (lambda df: df.assign(laterality=df.laterality.where(df.index != 1, "l")), "laterality must be L or R"),
    (lambda df: df.assign(cancer=df.cancer.where(df.index != 0, 2)), "cancer must be 0 or 1"),
    (lambda df: df.drop(columns=["laterality"]), "missing column(s) ['laterality']"),
])
def test_malformed_train_csv_gives_one_line(tiny_data, tmp_path, capsys, edit, needle):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    edit(pd.read_csv(data / "train.csv")).to_csv(data / "train.csv", index=False)
    assert main(["folds", "--data", str(data), "--out", str(tmp_path / "folds.csv")]) == 2
    one_error_line(capsys, "train.csv", needle)
    assert main(["preprocess", "--data", str(data), "--out", str(tmp_path / "png"), "--size", "64x32"]) == 2
    one_error_line(capsys, needle)
    assert main(["pipeline", "--data", str(data), "--run", str(tmp_path / "run")]) == 2
    one_error_line(capsys, needle)
    assert not (tmp_path / "run" / "summary.json").exists()
    assert not (tmp_path / "folds.csv").exists() and not (tmp_path / "png" / "manifest.csv").exists()


@pytest.mark.parametrize("args", [["--limit", "-3"], ["--jobs", "0"], ["--size", "0x0"], ["--size", "abc"],
                                  ["--bits", "12"]])
def test_preprocess_rejects_bad_options(tiny_data, tmp_path, args):
    res = subprocess.run([sys.executable, "-m", "mammo_utils", "preprocess", "--data", str(tiny_data), "--out",
                          str(tmp_path / "png"), *args], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "error:" in res.stderr
    assert not (tmp_path / "png").exists()


@pytest.mark.parametrize("args", [["--patients", "0"], ["--patients", "-5"], ["--size", "8x8"],
                                  ["--test-patients", "0"]])
def test_synth_rejects_bad_options(tmp_path, args):
    res = subprocess.run([sys.executable, "-m", "mammo_utils", "synth", "--out", str(tmp_path / "s"), *args],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "error:" in res.stderr
    assert not (tmp_path / "s").exists()


def test_too_many_jobs_are_capped(tiny_data, tmp_path, capsys):
    assert main(["preprocess", "--data", str(tiny_data), "--out", str(tmp_path / "png"), "--size", "64x32",
                 "--jobs", "999", "--limit", "4"]) == 0
    assert "using" in capsys.readouterr().out


def _odd_dicoms(data):
    """Replace three training images: a constant image, a 2-frame image, a Rows=0 header."""
    train = pd.read_csv(data / "train.csv")
    paths = [data / "train_images" / str(r.patient_id) / f"{r.image_id}.dcm" for r in train.head(3).itertuples()]
    write_dicom(paths[0], np.full((64, 48), 700, np.uint16), dict(BitsStored=12, PatientID="p"))
    two = np.stack([np.random.default_rng(0).integers(0, 4000, (64, 48))] * 2).astype(np.uint16)
    ds = pydicom.dcmread(paths[1])
    ds.NumberOfFrames = 2
    ds.PixelData = two.tobytes()
    ds.Rows, ds.Columns = 64, 48
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.save_as(paths[1], enforce_file_format=True)
    ds = pydicom.dcmread(paths[2])
    ds.Rows = 0
    ds.save_as(paths[2])
    return train.head(3).image_id.tolist()


def test_constant_multiframe_and_empty_images(tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    constant, two_frames, rows0 = _odd_dicoms(data)
    out = tmp_path / "png"
    assert main(["preprocess", "--data", str(data), "--out", str(out), "--size", "64x32", "--jobs", "1"]) == 1
    errors = pd.read_csv(out / "errors.csv").set_index("image_id")
    assert "blank" in errors.message[constant]
    assert "0x" in errors.message[rows0] and "no usable pixels" in errors.message[rows0]
    manifest = pd.read_csv(out / "manifest.csv").set_index("image_id")
    assert manifest.frames[two_frames] == 2 and constant not in manifest.index
    # check-read counts the same failures once each and names the files
    capsys.readouterr()
    assert main(["check-read", "--data", str(data), "--jobs", "1"]) == 1
    captured = capsys.readouterr()
    assert "1 failed" in captured.out and str(rows0) in captured.err and str(constant) not in captured.err


def test_truncated_checkpoint_is_named(tiny_data, tmp_path, capsys):
    run = tmp_path / "run" / "fold0"
    run.mkdir(parents=True)
    (run / "best.pt").write_bytes(b"PK\x03\x04" + b"\x00" * 20)
    assert main(["predict", "--data", str(tiny_data), "--run-dirs", str(run), "--out-path",
                 str(tmp_path / "s.csv"), "--jobs", "1"]) == 2
    one_error_line(capsys, f"checkpoint {run / 'best.pt'} is corrupt or truncated")
    assert not (tmp_path / "s.csv").exists()


def test_folds_on_a_table_that_cannot_make_folds_writes_nothing_and_warnings_are_one_line(tiny_data, tmp_path):
    """No cancer at all: one error line and no holdout.csv left behind. Fewer cancer patients than folds:
    one warning line (not Python's file:line and source echo)."""
    for name, keep in (("none", 0), ("few", 2)):
        data = tmp_path / name
        shutil.copytree(tiny_data, data, ignore=shutil.ignore_patterns("*_images"))
        train = pd.read_csv(data / "train.csv", dtype={"patient_id": str})
        cancer_patients = sorted(train[train.cancer == 1].patient_id.unique())
        train.loc[~train.patient_id.isin(cancer_patients[:keep]), "cancer"] = 0
        train.to_csv(data / "train.csv", index=False)
        out = tmp_path / f"run_{name}" / "folds.csv"
        res = subprocess.run([sys.executable, "-m", "mammo_utils", "folds", "--data", str(data), "--out", str(out),
                              "--holdout-fraction", "0"], capture_output=True, text=True, timeout=120)
        if keep == 0:
            assert res.returncode == 2 and "has cancer = 1" in res.stderr and "Traceback" not in res.stderr
            assert not (out.parent / "holdout.csv").exists() and not out.exists()
        else:
            assert res.returncode == 0, res.stderr
            lines = [line for line in res.stderr.splitlines() if "cancer patient" in line]
            assert lines == [lines[0]] and lines[0].startswith("warning: only 2 cancer patient(s)"), res.stderr
            assert "warnings.warn" not in res.stderr and out.exists()


def test_preprocess_never_writes_into_a_folder_of_someone_elses_files(tiny_data, tmp_path):
    """--preprocessed-dir naming a folder of a user's files (a manifest.csv, a PNG at a path the run
    writes) is refused in one line, every file as it was; an earlier preprocessing output is resumed."""
    import pandas as pd

    train = pd.read_csv(tiny_data / "train.csv", dtype={"patient_id": str, "image_id": str})
    r = train.iloc[0]
    theirs = tmp_path / "theirs"
    (theirs / r.patient_id).mkdir(parents=True)
    (theirs / "manifest.csv").write_text("mine\n")
    (theirs / r.patient_id / f"{r.image_id}.png").write_bytes(b"my picture")
    before = {p: p.read_bytes() for p in theirs.rglob("*") if p.is_file()}
    args = ["preprocess", "--data", str(tiny_data), "--image-size", "64x32", "--jobs", "1", "--limit", "2"]
    res = subprocess.run([sys.executable, "-m", "mammo_utils", *args, "--preprocessed-dir", str(theirs)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "not a preprocessing output" in res.stderr and "Traceback" not in res.stderr
    assert {p: p.read_bytes() for p in theirs.rglob("*") if p.is_file()} == before
    ours = tmp_path / "ours"
    for _ in range(2):  # a new folder, then the same folder again: resumed
        res = subprocess.run([sys.executable, "-m", "mammo_utils", *args, "--preprocessed-dir", str(ours)],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr

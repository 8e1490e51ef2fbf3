"""More of a hostile user's inputs to the importers: files that are empty or not text, names that look like
a mini-MIAS reference, a clinical sheet that says two things about one breast, an import stopped midway.

Each case ends in one line (an ``error:`` with exit 2, or a skipped row named in import.json) and leaves
every file outside ``--out`` byte for byte as it was.
"""
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

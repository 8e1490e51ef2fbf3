"""The six notebooks: structure (parameters cell, cleared outputs) and a papermill run on tiny data."""
import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from mammo_utils.pipeline import NOTEBOOK_DIR, NOTEBOOKS, notebook_parameters, parse_value, run_pipeline


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_structure(name):
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("#")
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] <= 2, "one parameters cell near the top"
    params = nb.cells[tagged[0]].source
    assert "def " not in params and "import" not in params
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None, f"{name}: outputs must be cleared in git"
            assert "def " not in c.source, f"{name}: logic belongs in mammo_utils"
    assert notebook_parameters(NOTEBOOK_DIR / f"{name}.ipynb")


def test_parse_value():
    assert parse_value("3") == 3 and parse_value("1e-3") == 0.001 and parse_value("none") is None
    assert parse_value("[1, 2]") == [1, 2] and parse_value("256x128") == "256x128" and parse_value("true") is True


def test_pipeline_runs_all_notebooks(tiny_data, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    run = tmp_path / "run"
    params = {"image_size": "64x32", "epochs": "2", "max_steps_per_epoch": "3", "n_splits": "3", "workers": "0",
              "bootstrap": "50", "gallery_per_machine": "1", "05.n_examples": "2"}
    assert run_pipeline(data, run, params=params, progress=False) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert set(NOTEBOOKS) <= set(summary["seconds"])
    for key in ("val_auc", "val_pf1", "threshold", "submission"):
        assert key in summary
    sub = pd.read_csv(summary["submission"])
    sample = pd.read_csv(data / "sample_submission.csv")
    assert list(sub.prediction_id) == list(sample.prediction_id) and sub.cancer.between(0, 1).all()
    for name in NOTEBOOKS:
        executed = nbformat.read(run / "notebooks" / f"{name}.ipynb", as_version=4)
        recorded = executed.metadata.papermill.parameters
        assert recorded.get("run_dir", str(run.resolve())) == str(run.resolve())
        figures = sum(1 for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
                      if "image/png" in o.get("data", {}))
        assert figures >= 1, f"{name} shows no figure"
    assert (run / "folds.csv").exists() and (run / "train" / "fold0" / "best.pt").exists()
    assert (run / "train" / "fold0" / "threshold.json").exists()

    # a failing notebook stops the pipeline with a non-zero status
    assert run_pipeline(data, tmp_path / "run2", params={**params, "03.strategy": "bogus"}, progress=False) == 1
    assert not (tmp_path / "run2" / "summary.json").exists()

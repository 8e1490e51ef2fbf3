"""The notebooks: structure (parameters cell, cleared outputs, no logic) and a papermill run on tiny data."""
import ast
import json

import nbformat
import pandas as pd
import pytest

from mammo_utils.workflow.pipeline import (
    COMPARE_NOTEBOOK,
    NOTEBOOK_DIR,
    NOTEBOOKS,
    notebook_defaults,
    notebook_parameters,
    parse_value,
    plan_parameters,
    run_pipeline,
)

ALL_NOTEBOOKS = NOTEBOOKS + ([COMPARE_NOTEBOOK] if (NOTEBOOK_DIR / f"{COMPARE_NOTEBOOK}.ipynb").exists() else [])
LOGIC = (ast.For, ast.AsyncFor, ast.While, ast.Try, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda,
         ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.IfExp)


SELF_EVIDENT = {"data_dir", "run_dir", "seed", "fold", "split"}


def control_flow(source: str, params: set[str]) -> list[str]:
    """Constructs a notebook cell must not hold: loops, try, definitions, comprehensions, and any `if`
    other than a trivial one on a parameter (``if name:`` / ``if not name:`` around plain statements)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, LOGIC):
            found.append(type(node).__name__)
        elif isinstance(node, ast.If):
            test = node.test.operand if isinstance(node.test, ast.UnaryOp) else node.test
            if not (isinstance(test, ast.Name) and test.id in params) or node.orelse \
                    or any(isinstance(n, ast.If) for n in node.body):
                found.append(f"if {ast.unparse(node.test)}")
    return found


def test_control_flow_checker_catches_logic():
    assert control_flow("if wheels_dir:\n    f(1)", {"wheels_dir"}) == []
    assert control_flow("for x in y:\n    f(x)", set()) == ["For"]
    assert control_flow("if path.exists():\n    f()", {"path"}) == ["if path.exists()"]
    assert control_flow("z = [f(a) for a in b]", set()) == ["ListComp"]


@pytest.mark.parametrize("name", ALL_NOTEBOOKS)
def test_notebook_structure(name):
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("#")
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] <= 2, "one parameters cell near the top"
    params = nb.cells[tagged[0]].source
    assert "def " not in params and "import" not in params
    declared = notebook_parameters(NOTEBOOK_DIR / f"{name}.ipynb")
    assert declared
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None, f"{name}: outputs must be cleared in git"
            assert not control_flow(c.source, declared), f"{name}: logic belongs in mammo_utils: {c.source[:80]}"
    for line in params.splitlines():  # every parameter says what it is for, or is self-evident
        if line.strip() and not line.startswith((" ", "#")):
            name = line.split("=")[0].strip()
            assert "=" in line and ("# " in line or name in SELF_EVIDENT), f"{name}: say what it is for"
            assert name in declared, f"{name}: papermill cannot parse this line"


def test_notebook_04_defaults_are_the_train_config_defaults():
    """One source: a parameter of notebook 04 named like a TrainConfig field has that field's default."""
    from dataclasses import fields

    from mammo_utils.learn.config import TrainConfig

    declared = notebook_defaults("04_train")
    other_meaning = {"run_dir", "folds"}  # the pipeline's run folder; which folds to train (TrainConfig: folds.csv)
    shared = {f.name: f.default for f in fields(TrainConfig) if f.name in declared and f.name not in other_meaning}
    assert {"epochs", "lr", "batch_size", "amp", "ema_decay", "workers", "seed"} <= set(shared)
    assert {k: declared[k] for k in shared} == shared


def test_parse_value():
    assert parse_value("3") == 3 and parse_value("1e-3") == 0.001 and parse_value("none") is None
    assert parse_value("[1, 2]") == [1, 2] and parse_value("256x128") == "256x128" and parse_value("true") is True


@pytest.mark.slow
def test_pipeline_runs_all_notebooks(tiny_data, tmp_path, capfd):
    import re
    import shutil

    from mammo_utils.explore import plots

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    run = tmp_path / "run"
    params = {"image_size": "64x32", "epochs": "2", "max_steps_per_epoch": "3", "n_splits": "2", "workers": "0",
              "folds": "all",
              "bootstrap": "50", "gallery_per_machine": "1", "05.n_examples": "2"}
    assert run_pipeline(data, run, params=params) == 0
    console = capfd.readouterr()
    summary = json.loads((run / "summary.json").read_text())
    # one best epoch, counted from 1, in the console, metrics.csv, summary.json and the learning curves
    fold0 = re.findall(r"epoch (\d+)/2 [^\n]*", console.out)[:2]  # the folds train in order: fold 0's lines first
    lines = re.findall(r"epoch \d+/2 [^\n]*", console.out)[:2]
    best_lines = [int(n) for n, line in zip(fold0, lines) if "*best*" in line]
    history = pd.read_csv(run / "train" / "fold0" / "metrics.csv")
    assert history.epoch.tolist() == [1, 2] and best_lines and best_lines[-1] == summary["best_epoch"]
    figure = plots.learning_curves(history, summary["best_epoch"])
    marked = {line.get_xdata()[0] for ax in figure.axes for line in ax.lines if "best epoch" in str(line.get_label())}
    assert marked == {summary["best_epoch"]}
    # output sent to a file: progress comes as whole lines, never carriage-return redraws
    assert "\r" not in console.out + console.err
    # figures as files beside their notebooks, and one HTML report
    figures = sorted(p.name for p in (run / "notebooks").glob("*_fig*.png"))
    assert len(figures) >= len(NOTEBOOKS) and all((run / "notebooks" / f).stat().st_size > 1000 for f in figures)
    report = (run / "report.html").read_text()
    assert report.count("data:image/png;base64") >= len(figures) and "06_submission" in report
    assert set(NOTEBOOKS) <= set(summary["seconds"])
    for key in ("val_auc", "val_pf1", "val_threshold", "decision", "submission"):
        assert key in summary
    sub = pd.read_csv(summary["submission"])
    sample = pd.read_csv(data / "sample_submission.csv")
    assert list(sub.prediction_id) == list(sample.prediction_id) and sub.cancer.between(0, 1).all()
    plan = plan_parameters(data.resolve(), run.resolve(), params)
    for name in NOTEBOOKS:
        executed = nbformat.read(run / "notebooks" / f"{name}.ipynb", as_version=4)
        recorded = executed.metadata.papermill.parameters
        assert plan[name] and recorded == plan[name], name  # what was injected is what the plan says
        declared = notebook_defaults(name)
        assert "data_dir" not in declared or recorded["data_dir"] == str(data.resolve()), name
        assert "run_dir" not in declared or recorded["run_dir"] == str(run.resolve()), name
        assert "run_dirs" not in declared or recorded["run_dirs"] == [str(run.resolve() / "train")], name
        figures = sum(1 for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
                      if "image/png" in o.get("data", {}))
        assert figures >= 1, f"{name} shows no figure"
    assert (run / "folds.csv").exists() and (run / "train" / "fold0" / "best.pt").exists()
    assert (run / "train" / "fold0" / "threshold.json").exists()
    # a locked holdout, every fold trained, out-of-fold predictions, estimates side by side
    from mammo_utils.learn.holdout import split_holdout
    from mammo_utils.tables import read_table

    holdout, folds = pd.read_csv(run / "holdout.csv"), pd.read_csv(run / "folds.csv")
    locked = set(holdout.patient_id)
    assert locked and not locked & set(folds.patient_id)
    oof = pd.read_csv(run / "oof_predictions.csv")
    assert sorted(oof.fold.unique()) == [0, 1] and oof.image_id.is_unique and not locked & set(oof.patient_id)
    for k in range(2):
        val = pd.read_csv(run / "train" / f"fold{k}" / "val_predictions.csv")
        assert not locked & set(val.patient_id) and set(val.image_id) <= set(folds.image_id)
    estimates = summary["estimates"]
    assert {"selection", "oof", "holdout", "synthetic_test"} <= set(estimates)
    assert {"auc", "auc_ci", "pf1", "pf1_ci", "pr_auc", "threshold", "breasts", "cancer_breasts",
            "fingerprint"} <= set(estimates["holdout"])
    assert estimates["holdout"]["threshold"] == estimates["oof"]["threshold"] == summary["decision"]["threshold"]
    again = split_holdout(read_table(data), 0.15, 0)[2]["fingerprint"]  # the same data, fraction, seed
    assert estimates["holdout"]["fingerprint"] == again == json.loads((run / "holdout.json").read_text())["fingerprint"]

    # a failing notebook stops the pipeline with a non-zero status
    assert run_pipeline(data, tmp_path / "run2", params={**params, "03.strategy": "bogus"}, only="03",
                        progress=False) == 1
    assert not (tmp_path / "run2" / "summary.json").exists()


def test_the_console_gets_notebook_04s_progress_lines_and_no_table_rows(capsys):
    """Notebook 03's fold table (its header starts with 'fold') once reached the console as blank lines."""
    import logging

    from mammo_utils.workflow.pipeline import _EpochEcho

    lines = ["fold  patients  images  cancer", "0  8  30  4", "training 2 fold(s) [0, 1] one after another",
             "epoch 1/2  loss 0.6020  val pF1 0.300", "resuming /r/train/fold0 after epoch 1/2",
             "fold 0 took 1.2 min: about 1.2 min more for folds [1]", "fold 1: best epoch 2, pf1 0.500"]
    _EpochEcho().emit(logging.LogRecord("papermill", logging.INFO, "", 0, "\n".join(lines), None, None))
    assert capsys.readouterr().out.splitlines() == [f"[pipeline]   {line}" for line in lines[2:]]

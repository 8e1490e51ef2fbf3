"""The main job: run notebooks 01-06 with papermill into a run folder and summarize.

Shared parameters (data_dir, run_dir, image_size, seed, ...) go to every notebook that declares
them; ``-p NAME VALUE`` overrides a parameter in every notebook that has it, ``-p 04.NAME VALUE``
in one notebook only.
"""
from __future__ import annotations

import ast
import json
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = ["01_eda", "02_preprocess", "03_sampling", "04_train", "05_evaluate", "06_submission"]


def parse_value(text: str):
    """CLI strings to Python literals where they look like one ("3" -> 3, "[1,2]" -> list, "none" -> None)."""
    if not isinstance(text, str):
        return text
    if text.lower() in ("none", "null"):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def notebook_parameters(path: Path) -> set[str]:
    import papermill

    return set(papermill.inspect_notebook(str(path)).keys())


def plan_parameters(data: Path, run: Path, overrides: dict) -> dict[str, dict]:
    """Parameters for each notebook: the shared ones it declares, then the user's overrides."""
    shared = {"data_dir": str(data), "run_dir": str(run)}
    declared_by = {name: notebook_parameters(NOTEBOOK_DIR / f"{name}.ipynb") for name in NOTEBOOKS}
    per_nb = {}
    for name, declared in declared_by.items():
        params = {k: v for k, v in shared.items() if k in declared}
        if name == "06_submission":  # defaults point at Kaggle; here everything is local
            params.update(data_dir=str(data), run_dirs=[str(run / "train")], out_path=str(run / "submission.csv"),
                          wheels_dir="")
        for key, value in overrides.items():
            nb, _, pname = key.rpartition(".")
            if nb and not name.startswith(nb):
                continue
            if pname in declared:
                params[pname] = parse_value(value)
        per_nb[name] = params
    unknown = [k for k in overrides if not any(k.rpartition(".")[2] in d for d in declared_by.values())]
    if unknown:
        raise ValueError(f"no notebook declares parameter(s) {unknown}; see `papermill --help-notebook`")
    return per_nb


def run_pipeline(data, run, params: dict | None = None, start: str | None = None, only: str | None = None,
                 synth_patients: int = 200, progress: bool = True) -> int:
    """Execute the notebooks; write ``<run>/summary.json``; return a process exit status."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    logging.getLogger("papermill").setLevel(logging.WARNING)
    # Kernels inherit the environment: a non-interactive MPLBACKEND (Agg) would keep every figure out of
    # the executed notebooks, which use the inline backend.
    if os.environ.get("MPLBACKEND", "").lower() == "agg":
        os.environ.pop("MPLBACKEND")
    data, run = Path(data).resolve(), Path(run).resolve()
    run.mkdir(parents=True, exist_ok=True)
    if not (data / "train.csv").exists():
        from .synthetic import write_dataset

        print(f"{data} has no train.csv: writing the synthetic default dataset ({synth_patients} patients)")
        t0 = time.perf_counter()
        write_dataset(data, patients=synth_patients, seed=0, progress=progress)
        synth_seconds = round(time.perf_counter() - t0, 1)
    else:
        synth_seconds = None
    plan = plan_parameters(data, run, params or {})
    names = [n for n in NOTEBOOKS if (only is None or n.startswith(only)) and (start is None or n[:2] >= start[:2])]
    seconds = {}
    summary_path = run / "summary.json"
    previous = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    seconds.update(previous.get("seconds", {}))
    if synth_seconds is not None:
        seconds["synth"] = synth_seconds
    out_dir = run / "notebooks"
    out_dir.mkdir(exist_ok=True)
    for name in names:
        out_nb = out_dir / f"{name}.ipynb"
        print(f"[pipeline] {name} {json.dumps(plan[name], default=str)}", flush=True)
        t0 = time.perf_counter()
        try:
            papermill.execute_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"), str(out_nb), parameters=plan[name],
                                       kernel_name="python3", cwd=str(NOTEBOOK_DIR.parent), progress_bar=False,
                                       log_output=False, request_save_on_cell_execute=True)
        except PapermillExecutionError as exc:
            print(f"[pipeline] FAILED in {name} (cell {exc.exec_count}): {exc.ename}: {exc.evalue}\n"
                  f"[pipeline] open the executed copy to see where: {out_nb}", file=sys.stderr)
            return 1
        seconds[name] = round(time.perf_counter() - t0, 1)
        print(f"[pipeline] {name} done in {seconds[name]:.1f} s", flush=True)

    summary = {"data_dir": str(data), "run_dir": str(run), "seconds": seconds,
               "total_seconds": round(sum(seconds.values()), 1)}
    evaluation = run / "evaluation.json"
    if evaluation.exists():
        ev = json.loads(evaluation.read_text())
        summary.update(val_auc=ev.get("auc"), val_pf1=ev.get("pf1"), threshold=ev.get("threshold"),
                       aggregate=ev.get("aggregate"), val_breasts=ev.get("breasts"))
    sub = run / "submission.csv"
    if sub.exists():
        import pandas as pd

        s = pd.read_csv(sub)
        summary.update(submission=str(sub), submission_rows=len(s), submission_positive=int((s.cancer >= 0.5).sum()))
        summary.update(score_synthetic_test(data, run))
    summary_path.write_text(json.dumps(summary, indent=2))
    print("[pipeline] summary\n" + json.dumps(summary, indent=2))
    return 0


def score_synthetic_test(data: Path, run: Path) -> dict:
    """With the generator's side file, the synthetic test set has labels: score the submission on it."""
    import pandas as pd

    from . import metrics

    truth_path, images_path = data / "synthetic_truth.csv", run / "submission_images.csv"
    if not truth_path.exists() or not images_path.exists():
        return {}
    truth = pd.read_csv(truth_path)
    truth = truth[truth.split == "test"]
    labels = metrics.with_prediction_id(truth).groupby("prediction_id").cancer.max()
    sub = pd.read_csv(run / "submission.csv").set_index("prediction_id").cancer
    probs = pd.read_csv(images_path).groupby("prediction_id").pred.mean()
    y = labels.reindex(sub.index)
    return {"test_pf1": metrics.pfbeta(y, sub), "test_auc": metrics.auc(y, probs.reindex(sub.index).fillna(0)),
            "test_breasts": int(len(y)), "test_positives": int(y.sum())}

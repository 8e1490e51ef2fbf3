"""The main job: run the notebooks with papermill into a run folder and summarize.

Shared parameters (data_dir, run_dir, image_size, seed, ...) go to every notebook that declares
them; ``-p NAME VALUE`` overrides a parameter in every notebook that has it, ``-p 04.NAME VALUE``
in one notebook only. Every override is checked (notebook, name, type) before any notebook runs.
"""
from __future__ import annotations

import ast
import json
import logging
import os
import re
import sys
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from .. import paths
from ..errors import UserError

log = logging.getLogger(__name__)

NOTEBOOK_DIR = paths.SOURCE_NOTEBOOKS
NOTEBOOKS = ["01_eda", "02_preprocess", "03_sampling", "04_train", "05_evaluate", "06_submission"]
COMPARE_NOTEBOOK = "07_compare"
# lines of notebook 04 the pipeline echoes to the console (not a table whose header starts with "fold")
ECHOED = re.compile(r"(epoch \d+/\d+ |training \d+ fold|fold \d+[ :]|resuming )")


def parse_value(text: str, default=None):
    """CLI strings to Python literals where they look like one ("3" -> 3, "[1,2]" -> list, "none" -> None).

    Where the parameter's ``default`` is a string, "none" stays the string "none": a choice such as
    ``label_control``, ``amp`` or ``aggregate`` takes the word, and None would be no choice at all."""
    if not isinstance(text, str):
        return text
    if isinstance(default, str) and text.lower() == "none":
        return "none"
    if text.lower() in ("none", "null"):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


@lru_cache(maxsize=None)
def notebook_defaults(name: str) -> dict:
    """{parameter: default value} of a notebook's ``parameters`` cell."""
    import papermill

    params = papermill.inspect_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"))
    return {k: parse_value(v["default"]) for k, v in params.items()}


@lru_cache(maxsize=None)
def notebook_help(name: str) -> dict:
    """{parameter: the comment beside it} of a notebook's ``parameters`` cell."""
    import papermill

    params = papermill.inspect_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"))
    return {k: v.get("help", "") for k, v in params.items()}


def notebook_parameters(path: Path) -> set[str]:
    return set(notebook_defaults(Path(path).stem))


def check_type(notebook: str, name: str, value, default) -> None:
    """A value must have its default's type (ints pass for floats; a None default accepts anything)."""
    if default is None or value is None:
        return
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str),
          list: lambda v: isinstance(v, (list, tuple)),
          dict: lambda v: isinstance(v, dict)}.get(type(default), lambda v: True)
    if not ok(value):
        raise UserError(f"parameter {name} of {notebook} must be {type(default).__name__} "
                        f"(default {default!r}); got {value!r}")


def notebook_names(names=None) -> list[str]:
    return list(names or NOTEBOOKS)


def plan_parameters(data: Path, run: Path, overrides: dict, names=None) -> dict[str, dict]:
    """Parameters for each notebook: the shared ones it declares, then the user's checked overrides."""
    names = notebook_names(names)
    shared = {"data_dir": str(data), "run_dir": str(run)}
    for key in overrides:  # checked against every notebook of the pipeline, whichever of them run now
        nb, _, pname = key.rpartition(".")
        targets = [n for n in NOTEBOOKS if n.startswith(nb)] if nb else NOTEBOOKS
        if nb and not targets:
            raise UserError(f"-p {key}: no notebook starts with {nb!r} (notebooks: {', '.join(names)})")
        if not any(pname in notebook_defaults(n) for n in targets):
            where = f"notebook {targets[0]}" if nb else "any notebook"
            shown = targets[0] if nb else "NN_name"
            raise UserError(f"-p {key}: {where} has no parameter {pname!r}; `python -m mammo_utils pipeline --help` "
                            f"lists them all, or `papermill --help-notebook {NOTEBOOK_DIR / shown}.ipynb`")
    per_nb = {}
    for name in names:
        declared = notebook_defaults(name)
        params = {k: v for k, v in shared.items() if k in declared}
        if name == "06_submission":  # defaults point at Kaggle; here everything is local
            params.update(data_dir=str(data), run_dirs=[str(paths.train_root(run))],
                          out_path=str(paths.submission_csv(run)), wheels_dir="")
        for key, value in overrides.items():
            nb, _, pname = key.rpartition(".")
            if (nb and not name.startswith(nb)) or pname not in declared:
                continue
            value = parse_value(value, declared[pname])
            check_type(name, pname, value, declared[pname])
            params[pname] = value
        per_nb[name] = params
    return per_nb


def select_notebooks(start: str | None, only: str | None, names=None) -> list[str]:
    names = notebook_names(names)
    for flag, prefix in (("--from", start), ("--only", only)):
        if prefix is not None and not any(n.startswith(str(prefix).zfill(2)[:2]) for n in names):
            raise UserError(f"{flag} {prefix}: no such notebook (choose from {', '.join(n[:2] for n in names)})")
    return [n for n in names if (only is None or n.startswith(str(only).zfill(2)[:2]))
            and (start is None or n[:2] >= str(start).zfill(2)[:2])]


class _EpochEcho(logging.Handler):
    """Echo the kernel's per-epoch lines (papermill logs cell output) to the console."""

    def emit(self, record):
        for line in record.getMessage().splitlines():
            if ECHOED.match(line):
                print(f"[pipeline]   {line}", flush=True)


def prepare_data(data: Path, synth_patients: int, progress: bool = True, preset: str = "default") -> float | None:
    """Use ``data`` when it holds train.csv; write the synthetic default into it only when it is missing
    or empty. Returns the seconds spent writing synthetic data (None when the data was there)."""
    from ..synthetic import check_synthetic_target, write_dataset

    if paths.split_csv(data, "train").exists():
        return None
    check_synthetic_target(data)
    print(f"{data} is empty: writing the synthetic {preset} dataset ({synth_patients} patients)")
    t0 = time.perf_counter()
    size = (256, 208) if preset.startswith("hard") else (640, 512)  # the benchmark trades pixels for patients
    write_dataset(data, patients=synth_patients, seed=0, progress=progress, preset=preset, size=size)
    return round(time.perf_counter() - t0, 1)


def execute_notebook(name: str, out_nb: Path, params: dict, progress: bool = True) -> None:
    import papermill

    papermill.execute_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"), str(out_nb), parameters=params,
                               kernel_name="python3", cwd=str(Path.cwd()),  # relative parameters: the caller's
                               progress_bar=progress and sys.stderr.isatty(),  # a log gets the per-notebook lines
                               log_output=True, request_save_on_cell_execute=True)


def run_pipeline(data, run, params: dict | None = None, start: str | None = None, only: str | None = None,
                 synth_patients: int = 200, progress: bool = True, notebooks=None, preset: str = "default") -> int:
    """Execute the notebooks; write ``<run>/summary.json``; return a process exit status."""
    from ..locks import folder_lock

    pm_log = logging.getLogger("papermill")
    pm_log.setLevel(logging.INFO)
    pm_log.propagate = False
    if not any(isinstance(h, _EpochEcho) for h in pm_log.handlers):
        pm_log.addHandler(_EpochEcho())
    # Kernels inherit the environment: a non-interactive MPLBACKEND (Agg) would keep every figure out of
    # the executed notebooks, which use the inline backend.
    if os.environ.get("MPLBACKEND", "").lower() == "agg":
        os.environ.pop("MPLBACKEND")
    data, run = Path(data).resolve(), Path(run).resolve()
    names = select_notebooks(start, only, notebooks)
    plan = plan_parameters(data, run, params or {}, notebooks)  # every override checked before any work
    run.mkdir(parents=True, exist_ok=True)
    with folder_lock(run, "a pipeline run"):  # before any work: two pipelines on one folder overwrite each other
        return _run_locked(data, run, names, plan, params or {}, notebooks, synth_patients, progress, preset)


def _run_locked(data: Path, run: Path, names, plan: dict, params: dict, notebooks, synth_patients: int,
                progress: bool, preset: str) -> int:
    """The body of :func:`run_pipeline`, run while this process holds the run folder's lock."""
    from nbclient.exceptions import DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    from ..tables import read_table
    from .report import save_figures, write_report
    from .summary import write_summary

    synth_seconds = prepare_data(data, synth_patients, progress, preset)
    for split in ("train", "test"):  # bad tables stop here with one line, not inside a notebook
        if paths.split_csv(data, split).exists():
            read_table(data, split)
    if not paths.split_csv(data, "test").exists() and "06_submission" in names:
        print(f"[pipeline] {paths.split_csv(data, 'test')} does not exist (an imported or combined dataset): "
              f"no submission, 06_submission skipped", flush=True)
        names = [n for n in names if n != "06_submission"]
    with tracked(run, data, params, plan) as tracker, Interrupt() as interrupt:
        summary_path = paths.summary_json(run)
        previous = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        seconds = dict(previous.get("seconds", {}))
        if synth_seconds is not None:
            seconds["synth"] = synth_seconds
        out_dir = paths.notebooks_dir(run)
        out_dir.mkdir(exist_ok=True)
        for i, name in enumerate(names, 1):
            out_nb = out_dir / f"{name}.ipynb"
            print(f"[pipeline] {i}/{len(names)} {name} {json.dumps(plan[name], default=str)}", flush=True)
            t0 = time.perf_counter()
            try:
                execute_notebook(name, out_nb, plan[name], progress)
            except (Exception, KeyboardInterrupt) as exc:
                if interrupt.signal is None and not isinstance(exc, (PapermillExecutionError, DeadKernelError,
                                                                     KeyboardInterrupt)):
                    raise
                if interrupt.signal is not None or isinstance(exc, KeyboardInterrupt):
                    return interrupt.stop(tracker, name)
                why = (f"(cell {exc.exec_count}): {exc.ename}: {exc.evalue}" if isinstance(exc, PapermillExecutionError)
                       else "its kernel died (killed by the system: out of memory?)")
                print(f"[pipeline] FAILED in {name} {why}\n"
                      f"[pipeline] open the executed copy to see where: {out_nb}", file=sys.stderr)
                return 1
            finally:
                if out_nb.exists():
                    save_figures(out_nb)
            if interrupt.signal is not None:  # the kernel was between cells: it finished this notebook
                return interrupt.stop(tracker, name)
            seconds[name] = round(time.perf_counter() - t0, 1)
            print(f"[pipeline] {name} done in {seconds[name]:.1f} s, {len(list(out_dir.glob(name + '_fig*.png')))} "
                  f"figure(s)", flush=True)

        summary = write_summary(data, run, seconds)
        report = write_report(run, notebook_names(notebooks) + [COMPARE_NOTEBOOK])
        record_run(tracker, run, plan, summary)
        print("[pipeline] summary\n" + json.dumps(summary, indent=2, default=str))
        for why in summary.get("stale", []):
            print(f"[pipeline] STALE, left out of the summary: {why}", flush=True)
        print(f"[pipeline] report: {report}; figures: {out_dir}/*_fig*.png; notebooks: make lab RUN={run}")
    return 0


class Interrupt:
    """Ctrl-C (or SIGTERM) stops the whole pipeline. A notebook's kernel runs in a process group of its own,
    which the terminal's SIGINT never reaches: the first signal is passed on to each kernel's group (the cell
    stops with KeyboardInterrupt, training ends its MLflow run KILLED, last.pt stays for a resume), a second
    one kills them. :meth:`stop` then ends the pipeline's run KILLED and says so in one line."""

    def __init__(self):
        self.signal, self._before = None, {}

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._before[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        import signal

        for sig, handler in self._before.items():
            signal.signal(sig, handler)
        return False

    def _handle(self, signum, frame):
        import signal

        first = self.signal is None
        self.signal = signum
        signal_kernels(signal.SIGINT if first else signal.SIGKILL)
        if not first:
            raise KeyboardInterrupt

    def stop(self, tracker, name: str) -> int:
        tracker.end("KILLED")
        print(f"[pipeline] interrupted in {name}: stopped; rerun the same command to resume where it stopped",
              file=sys.stderr, flush=True)
        return 130


def signal_kernels(sig) -> None:
    """Send ``sig`` to the process group of every process this one started (the notebooks' kernels, with
    their DataLoader workers and torchrun processes)."""
    import psutil

    for child in psutil.Process().children():
        try:
            group = os.getpgid(child.pid)
            if group != os.getpgrp():
                os.killpg(group, sig)
            else:
                child.send_signal(sig)
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass


def params_fingerprint(plan: dict) -> str:
    """A hash of every notebook's parameters: equal only for a rerun with the very same parameters."""
    import hashlib

    return hashlib.sha1(json.dumps(plan, sort_keys=True, default=str).encode()).hexdigest()[:16]


@contextmanager
def tracked(run: Path, data: Path, overrides: dict, plan: dict | None = None):
    """The pipeline's tracking run (see :mod:`.tracking`), nested under a sweep's run when there is one;
    handed to the notebooks' kernels through the environment for as long as the pipeline runs.

    The run folder's earlier MLflow run (tracking.json) is continued only for this very folder, in the
    same store, with the same parameters, and never after an untracked rerun changed the folder. Otherwise
    (other parameters, a copied folder) a new run is made, tagged with the earlier one's id
    (``mammo.previous_run_id``). Ends FINISHED (record_run), KILLED
    on Ctrl-C, else FAILED: never left RUNNING."""
    from .. import tracking
    from ..learn.runs import Run

    plan = plan if plan is not None else plan_parameters(data, run, overrides)
    settings = plan.get("04_train") or plan_parameters(data, run, overrides, ["04_train"])["04_train"]
    defaults = notebook_defaults("04_train")
    mode = settings.get("tracking", defaults.get("tracking", "mlflow"))
    uri = tracking.resolve_uri(settings.get("tracking_uri", defaults.get("tracking_uri")), run.parent)
    from ..learn.runs import file_fingerprint

    # the same parameters on other data (train.csv rewritten) are another run: its holdout would differ
    saved = Run(run).tracking()
    params = params_fingerprint({**plan, "train.csv": file_fingerprint(paths.split_csv(data, "train"))})
    same = saved.get("uri") == uri and saved.get("folder") == str(run) and saved.get("params") == params
    previous = saved.get("run_id") or saved.get(tracking.PREVIOUS_TAG)
    link = {tracking.PREVIOUS_TAG: previous} if previous and not same else {}
    tracker = tracking.start(mode, run.parent, run.name, uri, saved.get("run_id") if same else None,
                             parent_id=os.environ.get(tracking.RUN_ID_ENV),
                             tags={**tracking.provenance_tags(), "data_dir": str(data), "kind": "pipeline", **link})
    if tracker.active:
        paths.tracking_json(run).write_text(json.dumps({"run_id": tracker.run_id, "uri": uri, "folder": str(run),
                                                        "params": params, **link}))
    elif previous:  # an untracked rerun: the recorded run no longer describes the folder, and is never continued
        paths.tracking_json(run).write_text(json.dumps({"run_id": None, "folder": str(run), "untracked_rerun": True,
                                                        tracking.PREVIOUS_TAG: previous}))
    try:
        with tracking.passed_on(tracker):
            yield tracker
    except KeyboardInterrupt:
        tracker.end("KILLED")
        raise
    finally:
        if not tracker.ended:  # record_run ends it FINISHED; anything else is a run that did not finish
            tracker.end("FAILED")


def record_run(tracker, run: Path, plan: dict, summary: dict) -> None:
    """Parameters of every notebook, the estimates and timings as metrics, and the run's files."""
    if not tracker.active:
        return
    for name, params in plan.items():
        tracker.params(params, f"{name}.")
    holdout = json.loads(paths.holdout_json(run).read_text()) if paths.holdout_json(run).exists() else {}
    tracker.params({"holdout_fingerprint": holdout.get("fingerprint")})
    for name, est in summary.get("estimates", {}).items():
        tracker.metrics({f"{name}_{k}": v for k, v in est.items() if k in ("auc", "pf1", "pr_auc", "threshold")})
        for k in ("auc_ci", "pf1_ci"):
            if est.get(k) and None not in est[k]:
                tracker.metrics({f"{name}_{k}_low": est[k][0], f"{name}_{k}_high": est[k][1]})
    tracker.metrics({f"seconds_{k}": v for k, v in summary.get("seconds", {}).items()})
    for path in (paths.summary_json(run), paths.evaluation_json(run), paths.report_html(run), paths.holdout_json(run),
                 paths.oof_csv(run), paths.holdout_predictions_csv(run), paths.model_card_md(run),
                 paths.model_card_json(run)):
        tracker.artifact(path)
    tracker.artifact(paths.notebooks_dir(run), "notebooks")
    from ..learn.runs import Run

    for fold in Run(run).folds():  # the present folds' decision files, none set aside
        tracker.artifact(fold.folder / paths.THRESHOLD, f"train/{fold.folder.name}")
    tracker.end("FINISHED")

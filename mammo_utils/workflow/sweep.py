"""Parameter sweeps: the notebook pipeline once per combination, each in its own run folder.

Grid file (YAML or JSON), either a product of values::

    04.loss: [bce, focal]
    04.ema_decay: [0.0, 0.999]

or a list of named combinations (``control: true`` marks a negative control)::

    combinations:
      - {name: all_random, 03.strategy: all, 04.sampler: random}
      - {name: shuffled, 03.label_control: shuffled, control: true}

Seeds are one more axis (``--seeds 0 1``: every combination once per seed). What does not depend on
a changed parameter is reused: the training images are preprocessed once per preprocessing
setting, the test images once, folds once per folds setting. A combination whose run folder holds
a finished ``summary.json`` with the same parameters is skipped, so an interrupted sweep resumes.
At the end notebook 07 compares the runs and writes ``comparison.csv`` into the sweep folder.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..errors import UserError
from .pipeline import (
    COMPARE_NOTEBOOK,
    NOTEBOOKS,
    execute_notebook,
    notebook_defaults,
    plan_parameters,
    run_pipeline,
)

PREPROCESS_KEYS = ("data_dir", "split", "image_size", "bits", "backend", "limit")
FOLDS_KEYS = ("data_dir", "strategy", "neg_per_pos", "label_control", "n_splits", "seed", "holdout_fraction",
              "holdout_seed")


def read_grid(path) -> list[dict]:
    """Combinations of a grid file: [{"name", "params": {NN.param: value}, "control"}, ...]."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"grid file {path} not found")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            grid = json.loads(text)
        else:
            import yaml

            grid = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is the user's file
        raise UserError(f"grid file {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    if not isinstance(grid, dict) or not grid:
        raise UserError(f"grid file {path} must be a mapping of parameters to value lists, or hold 'combinations'")
    if "combinations" in grid:
        combos = grid["combinations"]
        if not isinstance(combos, list) or not combos or not all(isinstance(c, dict) for c in combos):
            raise UserError(f"grid file {path}: combinations must be a non-empty list of mappings "
                            f"(name: ..., NN.param: value), got {combos!r}")
        out = []
        for i, c in enumerate(combos):
            c = dict(c)
            name = str(c.pop("name", f"c{i}"))
            control = bool(c.pop("control", False))
            out.append({"name": name, "params": c, "control": control})
        return unique_folders(out, path)
    keys = list(grid)
    for k in keys:
        if not isinstance(grid[k], list) or not grid[k]:
            raise UserError(f"grid file {path}: {k} must map to a non-empty list of values")
    out = []
    for values in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, values))
        name = "_".join(f"{k.rpartition('.')[2]}-{v}" for k, v in params.items())
        control = params.get("03.label_control", params.get("label_control")) == "shuffled"
        out.append({"name": name, "params": params, "control": control})
    return unique_folders(out, path)


MAX_NAME = 80


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", str(text)).strip("-")


def unique_folders(combos: list[dict], path) -> list[dict]:
    """Give each combination a folder name of its own: its slug, or, where slugs collide ("a/b" and
    "a b") or a long name was cut, the slug plus a short hash of the full name and parameters. A
    combination listed twice is refused before anything runs."""
    seen = {}
    for c in combos:
        key = json.dumps([c["name"], c["params"]], sort_keys=True, default=str)
        if key in seen:
            raise UserError(f"grid file {path}: combination {c['name']!r} is listed twice")
        seen[key] = c
    slugs = [slug(c["name"]) for c in combos]
    for c, s in zip(combos, slugs):
        if slugs.count(s) > 1 or len(s) > MAX_NAME or not s:
            digest = hashlib.sha1(json.dumps([c["name"], c["params"]], sort_keys=True, default=str).encode())
            s = f"{s[:MAX_NAME - 9]}-{digest.hexdigest()[:8]}".lstrip("-")
        c["name"] = s
    return combos


def key_of(params: dict, keys) -> str:
    chosen = {k: params.get(k) for k in keys}
    return hashlib.sha1(json.dumps(chosen, sort_keys=True, default=str).encode()).hexdigest()[:10]


def finished(run: Path, params: dict) -> bool:
    s, p = paths.summary_json(run), paths.sweep_params(run)
    if not (s.exists() and p.exists()):
        return False
    summary = json.loads(s.read_text())
    if not (summary.get("completed") and json.loads(p.read_text()).get("params") == params):
        return False
    from .summary import stale_results

    return not stale_results(run)  # a run changed since (a fold retrained by hand, say) is run again


def run_sweep(data, sweep_dir, grid, seeds=(0,), params: dict | None = None, synth_patients: int = 200,
              compare: bool = True, baseline: str | None = None, progress: bool = True, preset: str = "default",
              scheduler: str | None = None) -> int:
    """Run every combination x seed; return a process exit status. With a ``scheduler`` every fold of every
    combination x seed is a task on a Dask cluster (:mod:`.cluster`); the comparison is the same."""
    from .pipeline import prepare_data

    combos = read_grid(grid)
    if scheduler:
        from ..parallel import check_scheduler

        check_scheduler(scheduler)
    sweep = Path(sweep_dir).resolve()
    data = Path(data).resolve()
    base = dict(params or {})
    for c in combos:  # every override checked before any work
        plan_parameters(data, sweep / "check", {**base, **{k: str(v) for k, v in c["params"].items()}, "seed": "0"})
    prepare_data(data, synth_patients, progress, preset)
    sweep.mkdir(parents=True, exist_ok=True)
    from ..locks import folder_lock

    with folder_lock(sweep, "a sweep"), sweep_tracker(sweep, data, base) as tracker:
        if scheduler:
            from .cluster import sweep_on_cluster

            status = sweep_on_cluster(scheduler, data, sweep, [(c, s) for c in combos for s in seeds], base,
                                      synth_patients, compare, baseline, progress)
        else:
            status = _sweep_locked(data, sweep, combos, seeds, base, synth_patients, compare, baseline, progress)
        if tracker.active:
            tracker.params({"grid": json.dumps(combos), "seeds": list(seeds), **base})
            tracker.artifact(paths.comparison_csv(sweep))
            tracker.artifact(sweep / "07_compare.ipynb")
            for figure in sorted(sweep.glob("07_compare_fig*.png")):
                tracker.artifact(figure, "figures")
        return status


def sweep_tracker(sweep: Path, data: Path, base: dict):
    """The sweep's parent tracking run (a context manager): each combination's pipeline run nests under it."""
    from .. import tracking

    return tracking.parent_run(sweep, "sweep", plan_parameters(data, sweep / "check", base, ["04_train"])["04_train"],
                               data)


@dataclass
class SweepRun:
    """One combination x seed of a sweep: its folder, its checked parameters and what is left to run."""

    name: str
    run: Path
    combo: dict
    seed: int
    params: dict        # the run's own parameters: what its record says and a rerun is checked against
    overrides: dict     # those, pointed at the sweep's shared preprocessing
    notebooks: list
    folds_cache: Path


def plan_run(data: Path, sweep: Path, combo: dict, seed: int, base: dict) -> SweepRun:
    """A run's parameters, pointed at the sweep's shared preprocessing, and the notebooks it needs: 02
    only on the first use of a preprocessing setting, 03 only on the first use of a folds setting."""
    name = f"{combo['name']}_seed{seed}"
    run = sweep / name
    overrides = {**base, **{k: str(v) for k, v in combo["params"].items()}, "seed": str(seed)}
    plan = plan_parameters(data, run, overrides)
    pre_key = key_of({**plan["02_preprocess"], **{"split": "train"}}, PREPROCESS_KEYS)
    size = plan["02_preprocess"].get("image_size", notebook_defaults("02_preprocess")["image_size"])
    train_pre = paths.shared_preprocessed(sweep, "train", size, pre_key)
    test_pre = paths.shared_preprocessed(sweep, "test", size, pre_key)
    folds_key = key_of({**notebook_defaults("03_sampling"), **plan["03_sampling"]}, FOLDS_KEYS)
    notebooks = ["04_train", "05_evaluate", "06_submission"]
    if not (train_pre / paths.MANIFEST).exists():
        notebooks.insert(0, "02_preprocess")  # first use of this preprocessing: make it (resumable)
    if not paths.shared_folds(sweep, folds_key).exists():
        notebooks.insert(notebooks.index("04_train"), "03_sampling")
    return SweepRun(name, run, combo, seed, overrides, {**overrides, "02.preprocessed_dir": str(train_pre),
                                             "04.preprocessed_dir": str(train_pre),
                                             "06.test_preprocessed_dir": str(test_pre)},
                    notebooks, paths.shared_folds(sweep, folds_key))


def start_run(r: SweepRun) -> None:
    """Write the run's sweep record, and copy in the folds and the holdout they were made beside when an
    earlier run of the sweep made them."""
    record = {"combination": r.combo["name"], "seed": r.seed, "control": r.combo["control"],
              "params": dict(r.params)}
    r.run.mkdir(parents=True, exist_ok=True)
    if "03_sampling" not in r.notebooks:
        shutil.copy(r.folds_cache, paths.folds_csv(r.run))
        for holdout_file in (paths.holdout_csv, paths.holdout_json):
            shutil.copy(holdout_file(r.folds_cache.with_suffix("")), holdout_file(r.run))
    paths.sweep_params(r.run).write_text(json.dumps(record, indent=2))


def keep_folds(r: SweepRun) -> None:
    """After a run made the folds: keep them (with their holdout) for the next runs of the same setting."""
    if not r.folds_cache.exists():
        r.folds_cache.with_suffix("").mkdir(parents=True, exist_ok=True)
        for holdout_file in (paths.holdout_csv, paths.holdout_json):
            shutil.copy(holdout_file(r.run), holdout_file(r.folds_cache.with_suffix("")))
        shutil.copy(paths.folds_csv(r.run), r.folds_cache)


def mark_completed(r: SweepRun) -> None:
    summary = json.loads(paths.summary_json(r.run).read_text())
    summary.update(completed=True, combination=r.combo["name"], seed=r.seed)
    paths.summary_json(r.run).write_text(json.dumps(summary, indent=2))


def _sweep_locked(data: Path, sweep: Path, combos: list[dict], seeds, base: dict, synth_patients: int, compare: bool,
                  baseline: str | None, progress: bool) -> int:
    """The body of :func:`run_sweep`, run while this process holds the sweep folder's lock."""
    t_start = time.perf_counter()
    runs = [(c, s) for c in combos for s in seeds]
    failed = []
    for i, (combo, seed) in enumerate(runs, 1):
        r = plan_run(data, sweep, combo, seed, base)
        if finished(r.run, r.params):
            print(f"[sweep] {i}/{len(runs)} {r.name}: finished before, skipped", flush=True)
            continue
        start_run(r)
        print(f"[sweep] {i}/{len(runs)} {r.name}: {', '.join(n[:2] for n in r.notebooks)} "
              f"{json.dumps(combo['params'])}", flush=True)
        status = run_pipeline(data, r.run, params=r.overrides, notebooks=r.notebooks, progress=progress,
                              synth_patients=synth_patients)
        if status == 130:  # Ctrl-C stops the whole sweep, not one run of it; the same command resumes
            raise KeyboardInterrupt
        if status != 0:
            print(f"[sweep] {r.name} failed; going on with the others (rerun the same command once it is fixed: "
                  f"finished runs are skipped)", flush=True)
            failed.append(r.name)
            continue
        keep_folds(r)
        mark_completed(r)
    return finish_sweep(data, sweep, runs, failed, t_start, compare, baseline, progress)


def finish_sweep(data: Path, sweep: Path, runs, failed: list, t_start: float, compare: bool, baseline: str | None,
                 progress: bool) -> int:
    """Name the failed runs, then compare the grid's runs (notebook 07); a process exit status."""
    print(f"[sweep] {len(runs)} runs in {(time.perf_counter() - t_start) / 60:.1f} min"
          f"{f'; FAILED: {chr(44).join(failed)}' if failed else ''}", flush=True)
    status = 1 if failed else 0
    if compare:
        names = [f"{c['name']}_seed{s}" for c, s in runs]
        status = max(status, compare_sweep(data, sweep, baseline, progress, names, failed))
    return status


def compare_sweep(data, sweep: Path, baseline: str | None = None, progress: bool = True, runs=None,
                  failed=()) -> int:
    """Execute notebook 07 on a sweep folder: comparison.csv, paired differences, curves. ``runs``: the
    run folders of the current grid (others in the folder are stale and left out); ``failed``: those
    of them that failed, listed as failed in the comparison."""
    from papermill.exceptions import PapermillExecutionError

    out = sweep / "07_compare.ipynb"
    if runs is not None:
        stale = sorted(p.parent.name for p in sweep.glob("*/summary.json") if p.parent.name not in set(runs))
        if stale:
            print(f"[sweep] left out {len(stale)} run(s) of earlier grids: {', '.join(stale)}", flush=True)
    params = {"sweep_dir": str(sweep), "data_dir": str(data), "baseline": baseline,
              "run_names": list(runs) if runs is not None else None, "failed": list(failed)}
    from .report import save_figures

    try:
        execute_notebook(COMPARE_NOTEBOOK, out, params, progress)
    except PapermillExecutionError as exc:
        print(f"[sweep] comparison failed (cell {exc.exec_count}): {exc.ename}: {exc.evalue}; see {out}")
        return 1
    finally:
        if out.exists():
            save_figures(out)
    print(f"[sweep] comparison: {sweep / 'comparison.csv'} (notebook {out})")
    return 0


__all__ = ["read_grid", "run_sweep", "compare_sweep", "NOTEBOOKS"]

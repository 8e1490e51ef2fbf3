"""Training work fanned out over a Dask cluster: every fold of every sweep run is a task.

The engine (``local:N``, ``tcp://HOST:PORT``, ``slurm:[job.yaml]``, ``pbs:[job.yaml]``; retries; one task
per GPU; one bar) is :mod:`mammo_utils.parallel`, which notebook 04 also uses to train its folds in
parallel. Here are the sweep's tasks, in three steps:

1. before any training, in the sweep's order: preprocessing and folds, made once per setting exactly as
   a sequential sweep makes them, and each run's tracking run;
2. every fold of every run as a task: notebook 04 for that fold alone, in its own run folder under its
   own lock; a task whose worker dies is rerun elsewhere and resumes from the fold's ``last.pt``;
3. for each run whose folds are all done: notebooks 04 (it finds every fold trained), 05 and 06 as a task
   (the first run of each test preprocessing first, as notebook 06 makes it).

The comparison (notebook 07) waits for all of them and lists failed runs as failed; a failed task is
named with its reason. Rerunning the same command after a crash of the whole cluster picks up where
it stopped: finished runs are skipped and interrupted folds resume.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from .. import parallel, paths, tracking
from ..errors import UserError
from ..locks import folder_lock
from .pipeline import execute_notebook, plan_parameters, run_pipeline, tracked

FINISH = ["04_train", "05_evaluate", "06_submission"]  # a run's notebooks once its folds are trained


def notebook_fold_task(run: Path, params: dict, fold: int) -> dict:
    """Notebook 04 for one fold of a run, into ``<run>/notebooks/04_train_fold<k>.ipynb``, under the fold
    folder's lock; returns the fold's result as its best checkpoint holds it."""
    from papermill.exceptions import PapermillExecutionError

    from ..learn.launch import result_from_run

    out = paths.notebooks_dir(run) / f"04_train_fold{fold}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(paths.train_dir(run, fold), f"training fold {fold}"):
        try:
            execute_notebook("04_train", out, {**params, "folds": [fold], "scheduler": None}, progress=False)
        except PapermillExecutionError as exc:
            raise RuntimeError(f"notebook 04 failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue} "
                               f"(see {out})") from None
    return result_from_run(paths.train_dir(run, fold))


def finish_run_task(data: Path, run: Path, overrides: dict, synth_patients: int) -> int:
    """Notebooks 04 (every fold is trained: nothing left to train), 05 and 06 of a run whose folds are done."""
    status = run_pipeline(data, run, params=overrides, notebooks=FINISH,
                          progress=False, synth_patients=synth_patients)
    if status != 0:
        raise RuntimeError(f"notebooks 04-06 failed: see {paths.notebooks_dir(run)}")
    return status


def tracking_parent(data: Path, run: Path, overrides: dict) -> dict:
    """The environment under which a run's fold tasks log: its pipeline's tracking run (created now when
    the run has none yet, nested under the sweep's), continued later by notebooks 04-06."""
    plan = plan_parameters(data, run, overrides, FINISH)  # the plan of step 3's pipeline, which continues this run
    with tracked(run, data, overrides, plan) as tracker:
        tracker.end("SCHEDULED")  # its folds are queued; the pipeline marks it RUNNING, then FINISHED
    return {tracking.RUN_ID_ENV: tracker.run_id, "MLFLOW_TRACKING_URI": tracker.uri} if tracker.active else {}


def sweep_on_cluster(scheduler: str, data: Path, sweep: Path, runs, base: dict, synth_patients: int, compare: bool,
                     baseline: str | None, progress: bool) -> int:
    """The body of a sweep with ``--scheduler`` (the sweep folder's lock is held): see the module docstring."""
    from ..judge.estimates import fold_list
    from ..learn.data import n_folds
    from .sweep import finish_sweep, finished, keep_folds, mark_completed, plan_run, start_run

    t_start = time.perf_counter()
    failed, todo = [], []
    for i, (combo, seed) in enumerate(runs, 1):  # 1. preprocessing and folds, once per setting, in order
        r = plan_run(data, sweep, combo, seed, base)
        if finished(r.run, r.params):
            print(f"[sweep] {i}/{len(runs)} {r.name}: finished before, skipped", flush=True)
            continue
        start_run(r)
        before = [n for n in r.notebooks if n < "04"]
        if before:
            print(f"[sweep] {i}/{len(runs)} {r.name}: {', '.join(n[:2] for n in before)} before training", flush=True)
            if run_pipeline(data, r.run, params=r.overrides, notebooks=before, progress=progress,
                            synth_patients=synth_patients) != 0:
                print(f"[sweep] {r.name} failed before training; going on with the others", flush=True)
                failed.append(r.name)
                continue
            keep_folds(r)
        todo.append(r)
    tasks, gpus = [], 1
    for r in todo:  # 2. every fold of every run
        params = plan_parameters(data, r.run, r.overrides, ["04_train"])["04_train"]
        gpus = max(gpus, int(params.get("gpus") or 1))
        env = tracking_parent(data, r.run, r.overrides)
        for k in fold_list(params.get("folds"), n_folds(paths.folds_csv(r.run))):
            tasks.append(parallel.Task(f"{r.name}/fold{k}", notebook_fold_task, (r.run, params, k), env=env))
    print(f"[sweep] {len(tasks)} fold task(s) of {len(todo)} run(s) on {scheduler}", flush=True)
    with parallel.training_client(scheduler) as client:
        _, fold_failures = parallel.run_tasks(client, tasks, "sweep folds", gpus_per_task=gpus, progress=progress)
        ready = [r for r in todo if not any(name.startswith(f"{r.name}/") for name in fold_failures)]
        env = {k: os.environ[k] for k in (tracking.RUN_ID_ENV, "MLFLOW_TRACKING_URI") if k in os.environ}
        # 3. notebooks 04-06 of each run whose folds are all done; the first run of each test preprocessing
        # makes it (notebook 06), alone, and the others then read it
        leaders = list({r.overrides["06.test_preprocessed_dir"]: r for r in reversed(ready)}.values())
        done, run_failures = {}, {}
        for wave in (leaders, [r for r in ready if r not in leaders]):
            d, f = parallel.run_tasks(client, [parallel.Task(r.name, finish_run_task, (data, r.run, r.overrides,
                                                                                         synth_patients), env=env)
                                               for r in wave], "sweep evaluations", progress=progress)
            done.update(d)
            run_failures.update(f)
    for r in todo:
        if r.name in done:
            mark_completed(r)
        else:
            failed.append(r.name)
    if fold_failures or run_failures:
        print(f"[sweep] failed task(s) (rerun the same command once fixed: finished folds and runs are kept):\n"
              f"{parallel.failure_lines({**fold_failures, **run_failures})}", flush=True)
    return finish_sweep(data, sweep, runs, failed, t_start, compare, baseline, progress)


def job_script(scheduler: str) -> str:
    """The batch script a ``slurm:`` or ``pbs:`` scheduler would submit for each worker (nothing is
    submitted): to check the resources before spending a queue's time."""
    kind, _, spec = scheduler.partition(":")
    if kind not in ("slurm", "pbs"):
        raise UserError(f"a job script exists for slurm: and pbs: schedulers only, got {scheduler!r}")
    cluster = parallel.jobqueue_cluster(kind, parallel.read_resources(spec) if spec else parallel.JobResources())
    try:
        return cluster.job_script()
    finally:
        cluster.close()

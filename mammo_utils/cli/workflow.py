"""Whole jobs: ``pipeline``, ``sweep``, ``tune``, ``job-script``, ``kaggle-bundle``."""
from __future__ import annotations

import json

from .common import PRESET_NAMES, data_arg, positive

def _pipeline(a) -> int:
    from ..workflow.pipeline import run_pipeline

    params = {name: value for name, value in a.p or []}
    if a.scheduler:
        from ..parallel import check_scheduler

        check_scheduler(a.scheduler)
        params["04.scheduler"] = a.scheduler  # folds as parallel tasks
    return run_pipeline(a.data_dir, a.run_dir, params=params, start=a.from_, only=a.only, synth_patients=a.patients,
                        preset=a.preset)


def _sweep(a) -> int:
    from ..workflow.sweep import run_sweep

    return run_sweep(a.data_dir, a.run_dir, a.grid, seeds=a.seeds, params={n: v for n, v in a.p or []},
                     synth_patients=a.patients, compare=not a.no_compare, baseline=a.baseline, preset=a.preset,
                     scheduler=a.scheduler)


def _tune(a) -> int:
    from ..workflow.tune import run_tune

    return run_tune(a.data_dir, a.run_dir, a.space, trials=a.trials, seed=a.seed, params={n: v for n, v in a.p or []},
                    folds=a.folds, scheduler=a.scheduler, startup_trials=a.startup_trials, synth_patients=a.patients,
                    final=not a.no_final)


def _job_script(a) -> int:
    from ..workflow.cluster import job_script

    print(job_script(a.scheduler))
    return 0


def scheduler_arg(s, what: str) -> None:
    s.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help=f"{what} as parallel tasks on a Dask cluster: local:N (N worker processes, one GPU each where "
                        f"there are GPUs), tcp://HOST:PORT (a running scheduler), slurm:[job.yaml] or pbs:[job.yaml] "
                        f"(batch jobs through dask-jobqueue; the YAML sets cores, memory, gpus, walltime, queue, "
                        f"account, jobs)")


def _bundle(a) -> int:
    from ..workflow.bundle import build_bundle

    path = build_bundle(a.run_dir, a.out, with_deps=not a.no_deps)
    print(f"Kaggle bundle written to {path}")
    return 0


def notebook_epilog() -> str:
    """Every notebook parameter with its default, for ``pipeline --help`` and ``sweep --help``."""
    from ..workflow.pipeline import (
        COMPARE_NOTEBOOK,
        NOTEBOOKS,
        notebook_defaults,
        notebook_help,
    )

    lines = ["Notebook parameters (-p NAME VALUE sets it in every notebook that declares it, -p NN.NAME VALUE in "
             "notebook NN only; `none` is None):"]
    for name in NOTEBOOKS + [COMPARE_NOTEBOOK]:
        lines.append(f"  {name}:")
        meaning = notebook_help(name)
        lines += [f"    {k:22s} {json.dumps(v, default=str):28s} {meaning.get(k, '')}"
                  for k, v in notebook_defaults(name).items()]
    return "\n".join(lines)


def register(command) -> None:
    """Add these commands' parsers (``command(name, help)`` returns a subparser)."""
    s = command("pipeline", "run notebooks 01-06 with papermill", epilog_fn=notebook_epilog)
    data_arg(s, required=False, default="data/synthetic")
    s.add_argument("--run-dir", "--run", dest="run_dir", default="runs/demo", help="run folder to write")
    s.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="notebook parameter: NAME (every notebook declaring it) or NN.NAME (notebook NN only)")
    s.add_argument("--from", dest="from_", metavar="NN", default=None, help="first notebook number, e.g. 04")
    s.add_argument("--only", metavar="NN", default=None, help="run only this notebook number")
    s.add_argument("--patients", type=positive(int), default=200,
                   help="synthetic patients when --data is a missing or empty folder")
    s.add_argument("--preset", default="default", choices=PRESET_NAMES, help="synthetic preset for an empty --data")
    scheduler_arg(s, "train the folds of notebook 04")
    s.set_defaults(func=_pipeline)


    s = command("sweep", "run the pipeline once per parameter combination and compare the runs",
                epilog_fn=notebook_epilog)
    data_arg(s, required=False, default="data/synthetic")
    s.add_argument("--run-dir", "--run", dest="run_dir", required=True, help="sweep folder (one run folder per combination)")
    s.add_argument("--grid", required=True, help="YAML or JSON mapping NN.param -> list of values")
    s.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds: an axis of the grid")
    s.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"), help="fixed notebook parameter")
    s.add_argument("--baseline", default=None, help="combination name to compare against (default: the first)")
    s.add_argument("--no-compare", action="store_true", help="skip notebook 07 at the end")
    s.add_argument("--patients", type=positive(int), default=200, help="synthetic patients for an empty --data")
    s.add_argument("--preset", default="default", choices=PRESET_NAMES, help="synthetic preset for an empty --data")
    scheduler_arg(s, "every fold of every combination x seed")
    s.set_defaults(func=_sweep)

    s = command("tune", "search training settings with Optuna on validation, then judge the best once on the holdout",
                epilog_fn=notebook_epilog)
    data_arg(s, required=False, default="data/synthetic")
    s.add_argument("--run-dir", "--run", dest="run_dir", required=True, help="search folder (base/, search/, "
                   "study.db, best/, tune.json); rerun to continue the study")
    s.add_argument("--space", required=True, help="YAML or JSON: setting -> [choices] or {low, high, log, step}")
    s.add_argument("--trials", type=positive(int), default=20, help="trials in the study, counting earlier runs'")
    s.add_argument("--seed", type=int, default=0, help="seed of the TPE sampler")
    s.add_argument("--folds", type=int, nargs="+", default=[0], help="folds each trial trains (its value: their pooled "
                   "validation AUC)")
    s.add_argument("--startup-trials", type=int, default=5, help="trials before the median pruner stops any")
    s.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"), help="fixed notebook parameter")
    s.add_argument("--no-final", action="store_true", help="search only: no final fit, the holdout untouched")
    s.add_argument("--patients", type=positive(int), default=200, help="synthetic patients for an empty --data")
    scheduler_arg(s, "the trials (as many at once as workers)")
    s.set_defaults(func=_tune)

    s = command("job-script", "print the batch script a slurm: or pbs: scheduler submits (nothing is submitted)")
    s.add_argument("--scheduler", required=True, help="slurm:[job.yaml] or pbs:[job.yaml]")
    s.set_defaults(func=_job_script)


    s = command("kaggle-bundle", "folder to upload as a Kaggle dataset (wheels + run)")
    s.add_argument("--run-dir", "--run", dest="run_dir", required=True, help="the run whose checkpoints to ship")
    s.add_argument("--out", required=True, help="bundle folder to write")
    s.add_argument("--no-deps", action="store_true", help="skip downloading dependency wheels")
    s.set_defaults(func=_bundle)

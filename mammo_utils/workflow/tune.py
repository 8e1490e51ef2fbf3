"""Hyperparameter search: an Optuna study judged on validation only, then the best recipe trained on every
fold and judged once on the locked holdout.

The search space is written like a sweep grid, over notebook 04's training settings (``04.`` optional)::

    lr: {low: 1.0e-4, high: 1.0e-2, log: true}   # a float range, here on a log scale
    batch_size: {low: 8, high: 32, step: 8}      # whole numbers when low, high (and step) are
    model: [resnet10t, resnet18]                  # a choice

What ``<tune>`` holds, in the order it is made:

- ``base/``: notebooks 02 and 03 once: the preprocessed images, the locked holdout and the folds (02 is
  left out when ``04.preprocessed_dir`` names images preprocessed before: nothing would read its output);
- ``search/folds.csv``: a copy of the folds alone, with no holdout beside it; every trial trains the
  ``folds`` it is given in ``search/trials/<number>/fold<k>``, reports each epoch's validation AUC to a
  median pruner (a trial below the median of earlier trials at the same epoch stops there) and is worth
  the AUC of its pooled validation predictions (out-of-fold over those folds);
- ``study.db``: the study (SQLite, TPE sampler with a seed): rerunning the command continues it, a trial
  cut off by an interrupt runs again in its own folder (and resumes from its ``last.pt``);
- ``best/``: the best trial's settings trained on every fold (notebook 04) and judged once on the holdout
  (notebook 05);
- ``tune.json``: the trials, the best settings and the holdout estimate.

**The holdout stays locked until the final fit.** While the study runs, opening any holdout file of the
search folder fails in every process that runs a trial (:func:`holdout_guard`), and the trials run
``train`` on ``search/folds.csv`` only, never notebook 05. Every trial is an MLflow child run of the
study's run (pruned ones end KILLED), with the folds it trained nested under it.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .. import parallel, paths, tracking
from ..errors import UserError
from .pipeline import notebook_defaults, plan_parameters, prepare_data, run_pipeline
from .search_space import read_space, suggest

STUDY = "tune"
BEFORE_TRAINING = ["02_preprocess", "03_sampling"]


class HoldoutTouched(UserError):
    """Something opened a holdout file while the search runs: the search would be judged on it."""


# ---- the holdout guard -----------------------------------------------------------------------------------

_LOCKED: set[str] = set()  # folders whose holdout files may not be opened now
_HOOKED = False


def _audit(event, args):
    if event == "open" and _LOCKED and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        if os.path.basename(path).startswith("holdout"):
            real = os.path.realpath(path)
            if any(real.startswith(root + os.sep) for root in _LOCKED):
                raise HoldoutTouched(f"{real} was opened during the search: the holdout stays locked until the "
                                     f"final fit")


@contextmanager
def holdout_guard(root):
    """While the block runs, opening any ``holdout*`` file under ``root`` raises :class:`HoldoutTouched`
    in this process and in the processes it forks (DataLoader workers). An audit hook cannot be removed,
    so one is installed per process and switched on and off."""
    global _HOOKED
    if not _HOOKED:
        sys.addaudithook(_audit)
        _HOOKED = True
    root = os.path.realpath(root)
    _LOCKED.add(root)
    try:
        yield
    finally:
        _LOCKED.discard(root)


# ---- trials ------------------------------------------------------------------------------------------------

def storage(tune: Path):
    """The study's SQLite store, patient with the other processes that write to it."""
    import optuna

    return optuna.storages.RDBStorage(f"sqlite:///{Path(tune).resolve() / 'study.db'}",
                                      engine_kwargs={"connect_args": {"timeout": 60}})


def pooled_auc(folders, aggregate: str = "mean") -> float:
    """Per-breast AUC of the validation predictions of ``folders`` pooled (out-of-fold over those folds)."""
    import pandas as pd

    from .. import metrics

    df = pd.concat([pd.read_csv(Path(f) / paths.VAL_PREDICTIONS) for f in folders], ignore_index=True)
    b = metrics.aggregate_breasts(df, how=aggregate)
    return float(metrics.auc(b.cancer, b.pred))


def pruner(startup_trials: int):
    """The median pruner: after ``startup_trials`` finished trials, a trial whose validation AUC at an epoch
    is below the median of the finished trials' at that epoch stops there. Optuna does not store the
    pruner with the study: every process that opens it must be given this one."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=startup_trials)


def trial_task(tune: Path, trial_id: int, number: int, folder: str, cfg: dict, params: dict, folds: list,
               startup_trials: int) -> dict:
    """One trial, where a worker runs it: train ``folds`` with the trial's settings, each epoch's
    validation AUC reported to the study (its pruner may stop the trial there); holdout locked."""
    import optuna

    from ..learn.config import TrainConfig
    from ..learn.train import train

    study = optuna.load_study(study_name=STUDY, storage=storage(tune), pruner=pruner(startup_trials))
    trial = optuna.trial.Trial(study, trial_id)
    step = 0

    def report(epoch: int, row: dict) -> None:
        nonlocal step
        step += 1
        auc = float(row.get("val_auc", float("nan")))
        if auc == auc:
            trial.report(auc, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch}: validation AUC {auc:.3f} below the median of earlier trials")

    run = Path(tune) / "search" / "trials" / folder
    tracker = tracking.start(cfg.get("tracking", "mlflow"), tune.parent, f"trial{number}", cfg.get("tracking_uri"),
                             parent_id=os.environ.get(tracking.RUN_ID_ENV),
                             tags={**tracking.provenance_tags(), "kind": "trial", "trial": number})
    tracker.params(params)
    with holdout_guard(tune), tracking.passed_on(tracker):
        try:
            for k in folds:
                train(TrainConfig.from_dict({**cfg, **params, "fold": k, "run_dir": str(run / f"fold{k}")}),
                      progress=False, on_epoch=report)
        except optuna.TrialPruned as exc:
            tracker.tags({"state": "PRUNED", "pruned_at_epoch": step})
            tracker.end("KILLED")
            return {"state": "PRUNED", "step": step, "why": str(exc)}
        except BaseException:
            tracker.end("FAILED")
            raise
        value = pooled_auc([run / f"fold{k}" for k in folds], cfg.get("aggregate", "mean"))
        tracker.metrics({"value_val_auc": value})
        tracker.end()
    return {"state": "COMPLETE", "value": value}


def _planned(data: Path, tune: Path, base: dict, name: str) -> dict:
    """Every parameter notebook ``name`` gets in the base run: its defaults, then ``base``."""
    return {**notebook_defaults(name), **plan_parameters(data, tune / "base", base, [name])[name]}


def _images(nb: dict, tune: Path) -> Path:
    """The preprocessed folder a notebook's parameters name: its ``preprocessed_dir``, else the base's own."""
    return Path(nb.get("preprocessed_dir") or paths.preprocessed_dir(tune / "base", "train", nb["image_size"]))


def training_images(data: Path, tune: Path, base: dict) -> Path:
    """The preprocessed folder the trials and the final fit train on: ``04.preprocessed_dir``, else the
    base's own preprocessing."""
    return _images(_planned(data, tune, base, "04_train"), tune)


def base_notebooks(data: Path, tune: Path, base: dict) -> list[str]:
    """02 and 03; 03 alone when training reads images preprocessed before (``04.preprocessed_dir``), which
    must then exist: a search whose every trial fails on a missing folder would waste its whole budget."""
    made = _images(_planned(data, tune, base, "02_preprocess"), tune)
    read = training_images(data, tune, base)
    if made.resolve() == read.resolve():
        return BEFORE_TRAINING
    if not (read / "manifest.csv").is_file():
        raise UserError(f"training would read {read} (notebook 04's preprocessed_dir), which holds no manifest.csv, "
                        f"while notebook 02 writes {made}: point both at one folder (-p preprocessed_dir), or "
                        f"04.preprocessed_dir at images preprocessed before")
    return [n for n in BEFORE_TRAINING if n != "02_preprocess"]


def train_settings(data: Path, tune: Path, base: dict) -> dict:
    """The TrainConfig fields notebook 04 would use with ``base``, pointed at the preprocessed images and the
    search folder's folds (no holdout beside them)."""
    from ..learn.config import TrainConfig

    nb = _planned(data, tune, base, "04_train")
    pre = _images(nb, tune)
    cfg = {k: v for k, v in nb.items() if k in TrainConfig.__dataclass_fields__ and k not in ("run_dir", "fold", "folds")}
    return {**cfg, "preprocessed": str(pre), "folds": str(paths.folds_csv(tune / "search")), "resume": "auto"}


def fail_interrupted(study) -> None:
    """Trials an interrupt left RUNNING fail, and run again first, in their own folders (they resume)."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"folder": t.user_attrs.get("folder", f"trial{t.number:03d}")})
        print(f"[tune] trial {t.number} was cut off by an interrupt: it runs again and resumes", flush=True)


def search(study, tune: Path, space: dict, cfg: dict, folds: list, trials: int, startup_trials: int, client,
           progress: bool) -> None:
    """Ask, run and tell trials in waves of as many trials as the cluster has workers (1 without one): the
    trials of a wave run at once, and each wave's settings follow the finished ones (same seed, same study)."""
    from optuna.trial import TrialState

    width = max(1, len(client.scheduler_info().get("workers", {}))) if client is not None else 1
    env = {k: os.environ[k] for k in (tracking.RUN_ID_ENV, "MLFLOW_TRACKING_URI") if k in os.environ}
    while (done := len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                   TrialState.FAIL)))) < trials:
        wave = []
        for _ in range(min(width, trials - done)):
            trial = study.ask()
            params = suggest(trial, space)
            folder = trial.user_attrs.get("folder") or f"trial{trial.number:03d}"
            trial.set_user_attr("folder", folder)
            wave.append((trial, params))
            print(f"[tune] trial {trial.number}: {json.dumps(params)}", flush=True)
        tasks = [parallel.Task(f"trial{t.number}", trial_task, (tune, t._trial_id, t.number, t.user_attrs["folder"],
                                                                 cfg, p, folds, startup_trials), env=env)
                 for t, p in wave]
        if client is None:
            results, failures = {}, {}
            for task in tasks:
                try:
                    results[task.name] = parallel.call_task(task)
                except HoldoutTouched:
                    raise
                except Exception as exc:  # noqa: BLE001 - a failed trial is told FAIL and named; the study goes on
                    failures[task.name] = f"{type(exc).__name__}: {exc}"
        else:
            results, failures = parallel.run_tasks(client, tasks, f"trials {done}-{done + len(tasks) - 1}",
                                                   progress=progress)
        for trial, _ in wave:
            r = results.get(f"trial{trial.number}")
            if r is None:
                study.tell(trial, state=TrialState.FAIL)
                print(f"[tune] trial {trial.number} FAILED: {failures.get(f'trial{trial.number}')}", flush=True)
            elif r["state"] == "PRUNED":
                study.tell(trial, state=TrialState.PRUNED)
                print(f"[tune] trial {trial.number} pruned at {r['why']}", flush=True)
            else:
                study.tell(trial, r["value"])
                print(f"[tune] trial {trial.number}: validation AUC {r['value']:.3f}", flush=True)


# ---- the command -------------------------------------------------------------------------------------------

def run_tune(data, tune_dir, space_path, trials: int = 20, seed: int = 0, params: dict | None = None, folds=(0,),
             scheduler: str | None = None, startup_trials: int = 5, synth_patients: int = 200, final: bool = True,
             progress: bool = True) -> int:
    """Search, then the final fit; a process exit status. See the module docstring."""
    from ..locks import folder_lock

    try:
        import optuna
    except ImportError:
        raise UserError("tune needs optuna: pip install 'mammo-workbook[cluster]'") from None
    space = read_space(space_path)
    data, tune = Path(data).resolve(), Path(tune_dir).resolve()
    base = dict(params or {})
    plan_parameters(data, tune / "base", base)  # every fixed parameter checked before any work
    if trials < 1:
        raise UserError(f"trials must be >= 1, got {trials}")
    before = base_notebooks(data, tune, base)
    if scheduler:
        parallel.check_scheduler(scheduler)
    prepare_data(data, synth_patients, progress)
    tune.mkdir(parents=True, exist_ok=True)
    with folder_lock(tune, "a search"), study_tracker(tune, data, base) as parent:
        if not paths.folds_csv(tune / "base").exists():  # 1. preprocessing, the holdout and the folds, once
            if before != BEFORE_TRAINING:
                print(f"[tune] training reads {training_images(data, tune, base)}: notebook 02 left out", flush=True)
            if run_pipeline(data, tune / "base", params=base, notebooks=before, progress=progress,
                            synth_patients=synth_patients) != 0:
                return 1
        (tune / "search").mkdir(exist_ok=True)
        shutil.copy(paths.folds_csv(tune / "base"), paths.folds_csv(tune / "search"))
        study = optuna.create_study(study_name=STUDY, storage=storage(tune), direction="maximize", load_if_exists=True,
                                    sampler=optuna.samplers.TPESampler(seed=seed),
                                    pruner=pruner(startup_trials))
        fail_interrupted(study)
        cfg = train_settings(data, tune, base)
        print(f"[tune] {len(study.trials)} trial(s) in {tune / 'study.db'}; running up to {trials}", flush=True)
        with holdout_guard(tune):  # 2. the search: validation only
            if scheduler:
                with parallel.training_client(scheduler) as client:
                    search(study, tune, space, cfg, list(folds), trials, startup_trials, client, progress)
            else:
                search(study, tune, space, cfg, list(folds), trials, startup_trials, None, progress)
        summary = study_summary(study, space)
        paths_json = tune / "tune.json"
        before = json.loads(paths_json.read_text()) if paths_json.exists() else {}
        summary["holdout_looks"] = before.get("holdout_looks", [])  # the settings the holdout has judged so far
        status = 0
        if final and summary["best"] is not None:  # 3. the best recipe on every fold, judged once on the holdout
            best = summary["best"]["params"]
            if summary["holdout_looks"] and summary["holdout_looks"][-1] != best:
                print(f"[tune] WARNING: the holdout already judged {summary['holdout_looks'][-1]}; judging {best} too "
                      f"makes it a second look (tune.json counts them): quote the first, or a fresh holdout",
                      flush=True)
            summary["final_started"] = time.time()
            status = final_fit(data, tune, base, best, scheduler, synth_patients, progress)
            if status == 0:
                if summary["holdout_looks"][-1:] != [best]:
                    summary["holdout_looks"].append(best)
                summary["holdout"] = json.loads(paths.summary_json(tune / "best").read_text()).get(
                    "estimates", {}).get("holdout")
        paths_json.write_text(json.dumps(summary, indent=2, default=str))
        parent.params({"space": json.dumps(space), "trials": trials, "seed": seed, **base})
        parent.artifact(paths_json)
        print(f"[tune] {summary['counts']}; best: {json.dumps(summary['best'])}; written to {paths_json}", flush=True)
        return status


def study_tracker(tune: Path, data: Path, base: dict):
    """The study's parent tracking run (a context manager): the base pipeline, every trial and the final fit
    nest under it."""
    return tracking.parent_run(tune, "tune", plan_parameters(data, tune / "base", base, ["04_train"])["04_train"], data)


def study_summary(study, space: dict) -> dict:
    """Counts, every trial (settings, state, value, the epochs it reported) and the best one."""
    from optuna.trial import TrialState

    trials = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
               "folder": t.user_attrs.get("folder"), "epochs_reported": len(t.intermediate_values)}
              for t in study.trials]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    counts = {s.name.lower(): sum(t.state == s for t in study.trials) for s in
              (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    return {"space": space, "counts": counts, "trials": trials, "judged_on": "validation (pooled over the trial folds)",
            "best": {"number": best.number, "params": best.params, "val_auc": best.value} if best else None}


def final_fit(data: Path, tune: Path, base: dict, best: dict, scheduler: str | None, synth_patients: int,
              progress: bool) -> int:
    """Notebooks 04 (every fold, the best settings; in parallel with a scheduler) and 05 (the holdout, once)
    in ``<tune>/best``, on the base's preprocessing, folds and holdout."""
    run = tune / "best"
    run.mkdir(exist_ok=True)
    for f in (paths.folds_csv, paths.holdout_csv, paths.holdout_json):
        shutil.copy(f(tune / "base"), f(run))
    pre = training_images(data, tune, base)
    overrides = {**base, **{f"04.{k}": json.dumps(v) if not isinstance(v, str) else v for k, v in best.items()},
                 "04.preprocessed_dir": str(pre), "04.folds": "all"}
    if scheduler:
        overrides["04.scheduler"] = scheduler
    print(f"[tune] final fit of {json.dumps(best)} on every fold, judged once on the holdout: {run}", flush=True)
    return run_pipeline(data, run, params=overrides, notebooks=["04_train", "05_evaluate"], progress=progress,
                        synth_patients=synth_patients)

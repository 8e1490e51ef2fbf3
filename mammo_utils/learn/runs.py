"""What a run folder holds, and the policy for a rerun into one of its folds: resume, restart, or set aside.

:class:`Run` is the one reader of a run folder: its folds and their current checkpoints, each fold's
recipe, the decision rule, the holdout, the estimates, the tracking run and the preprocessed images.
Predict, the estimates, the bundle, the viewer, the summary and the sweeps all ask it.

A new (not resumed) fold run moves the earlier outputs into ``previous/<time>/``; no reader looks there.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from .. import paths
from ..errors import CheckpointError, UserError
from .config import BOOKKEEPING, TrainConfig, portable

if TYPE_CHECKING:  # a type only: reading a run folder needs no torch
    from .distributed import DistInfo

log = logging.getLogger(__name__)


RUN_OUTPUTS = (paths.BEST, paths.LAST, paths.METRICS, paths.VAL_PREDICTIONS, paths.THRESHOLD, paths.CONFIG)


def move_aside_previous(run: Path) -> Path | None:
    """A new (not resumed) run in a folder that holds another run's outputs moves them into
    ``previous/<time>/``: nothing is lost, and nothing of the old run is reported as this one's."""
    old = [run / name for name in RUN_OUTPUTS if (run / name).exists()]
    if not old:
        return None
    dest = run / "previous" / time.strftime("%Y%m%d-%H%M%S")
    while dest.exists():
        dest = dest.with_name(dest.name + "_")
    dest.mkdir(parents=True)
    for path in old:
        path.replace(dest / path.name)
    log.warning("%s held the outputs of an earlier run: moved to %s", run, dest)
    return dest


def config_changes(saved: dict, cfg: TrainConfig, folds_print: str | None = None) -> list[str]:
    """The model-changing settings (all but :data:`~.config.BOOKKEEPING`) in which a checkpoint's config
    differs from ``cfg``: any of them makes ``resume="auto"`` start afresh; bookkeeping never does.
    folds.csv counts by content where the checkpoint recorded it (``folds_print``): a copied run folder
    moves the file, not the folds."""
    now, saved = portable(cfg.to_dict()), portable(saved)
    moved = folds_print is not None and folds_print == file_fingerprint(cfg.folds)
    return sorted(k for k in now if k not in BOOKKEEPING and k in saved and not (k == "folds" and moved)
                  and json.dumps(saved[k], sort_keys=True) != json.dumps(now[k], sort_keys=True))


def check_resumable(ckpt: dict, cfg: TrainConfig, path: Path, margs: dict) -> None:
    """A resume must continue the same model on the same data; refuse before anything is written."""
    if ckpt.get("model_args") != margs:
        raise CheckpointError(f"cannot resume from {path}: it holds {ckpt.get('model_args')}, the config asks for "
                              f"{margs}. Use a new run_dir or resume=False")
    for key in ("preprocessed", "folds", "fold"):
        if key == "folds" and ckpt.get("folds_fingerprint") not in (None, file_fingerprint(cfg.folds)):
            raise CheckpointError(f"cannot resume from {path}: {cfg.folds} holds other folds than it was trained on")
        if key == "folds" and ckpt.get("folds_fingerprint") is not None:
            continue  # the same folds, wherever the file is now
        saved = portable(ckpt.get("config", {})).get(key)
        if saved is not None and saved != portable(cfg.to_dict())[key]:
            raise CheckpointError(f"cannot resume from {path}: {key} was {saved!r}, now {getattr(cfg, key)!r}")


def open_tracker(cfg: TrainConfig, info: DistInfo, device, resume_ckpt, preprocess_cfg: dict, holdout_print):
    """This fold's tracking run (rank 0 only): nested under the pipeline's run when there is one,
    continued when the training resumes, with the full config, the preprocessing and the fingerprints."""
    import hashlib
    import os

    from .. import tracking

    if not info.is_main or cfg.tracking == "none":
        return tracking.Tracker()
    earlier = (resume_ckpt or {}).get("mlflow_run_id")
    uri = tracking.resolve_uri(cfg.tracking_uri, Path(cfg.run_dir).parent)
    # continue the earlier MLflow run only for this very folder in the same store; a copied folder or
    # another store gets a run of its own, linked to the earlier one
    same = (resume_ckpt or {}).get("folder") == str(Path(cfg.run_dir).resolve()) and \
        (resume_ckpt or {}).get("mlflow_uri") == uri
    run_id = earlier if earlier and same else None
    link = {tracking.PREVIOUS_TAG: earlier} if earlier and run_id is None else {}
    tracker = tracking.start(cfg.tracking, Path(cfg.run_dir).parent, f"fold{cfg.fold}", uri, run_id,
                             parent_id=os.environ.get(tracking.RUN_ID_ENV),
                             tags={**tracking.provenance_tags(info.world_size, str(device)), "fold": cfg.fold, **link})
    if run_id is None:
        folds = Path(cfg.folds)
        data_print = hashlib.sha1(folds.read_bytes()).hexdigest()[:16] if folds.exists() else None
        tracker.params(cfg.to_dict(), "train.")
        tracker.params(preprocess_cfg, "preprocess.")
        tracker.params({"data_fingerprint": data_print, "holdout_fingerprint": holdout_print,
                        "world_size": info.world_size})
    return tracker


# ---- the run folder, read in one place ----------------------------------------------------------------

@lru_cache(maxsize=256)
def _hash(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def file_fingerprint(path) -> str | None:
    """A hash of a file's bytes (cached while its size and time stay): the identity of a checkpoint, kept
    by a copy of the folder, changed by any retraining."""
    path = Path(path)
    if not path.is_file():
        return None
    st = path.stat()
    return _hash(str(path.resolve()), st.st_size, st.st_mtime_ns)


class Fold:
    """One fold of a run: its folder, its current checkpoint (``fold<k>/best.pt``, never ``previous/``),
    its config.json and the recipe in it."""

    def __init__(self, k: int, folder: Path):
        self.k, self.folder = k, Path(folder)
        cfg = self.folder / paths.CONFIG
        self.config = json.loads(cfg.read_text()) if cfg.exists() else {}

    @property
    def checkpoint(self) -> Path:
        return self.folder / paths.BEST

    @property
    def recipe(self) -> dict:
        from .config import recipe

        return recipe(self.config)

    @property
    def started(self) -> float:
        """When this fold's training began (config.json), to tell the newest recipe from older ones."""
        cfg = self.folder / paths.CONFIG
        return float(self.config.get("started") or (cfg.stat().st_mtime if cfg.exists() else 0.0))

    def fingerprint(self) -> str | None:
        return file_fingerprint(self.checkpoint)

    def __repr__(self) -> str:
        return f"Fold({self.k}, {str(self.folder)!r})"


_WARNED: set = set()


def _warn_once(message: str) -> None:
    """One line per problem and process, however many readers meet it (a notebook asks the run often)."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(f"WARNING: {message}", flush=True)


class Run:
    """What a run folder holds (see :mod:`mammo_utils.paths` for the layout), read in one place.

    ``Run(path)`` takes a run folder (with ``train/``), or a folder of fold runs (``<run>/train``, a
    Kaggle bundle's ``run/train``). Its folds are the ``fold<k>/`` folders that hold a ``best.pt``; of
    those, :meth:`folds` keeps the ones of the run's recipe (that of the newest fold) and leaves the
    others out with one line that names them: folds of two recipes are never averaged."""

    def __init__(self, path):
        path = Path(path)
        if not paths.train_root(path).is_dir() and (path.name == "train" or _fold_dirs(path)):  # a run may be named train
            self.root, self.train = path.parent, path
        else:
            self.root, self.train = path, paths.train_root(path)

    def __repr__(self) -> str:
        return f"Run({str(self.root)!r})"

    # folds and checkpoints
    def all_folds(self) -> list[Fold]:
        """Every fold with a current checkpoint, whatever its recipe."""
        return [Fold(k, d) for k, d in _fold_dirs(self.train) if (d / paths.BEST).is_file()]

    def recipe(self) -> dict:
        """The run's recipe: that of its most recently trained fold ({} when nothing was trained)."""
        folds = self.all_folds()
        return max(folds, key=lambda f: (f.started, f.k)).recipe if folds else {}

    def other_recipe(self) -> dict[int, list[str]]:
        """{fold: settings in which it differs from the run's recipe}, for the folds that do."""
        ref, out = self.recipe(), {}
        for f in self.all_folds():
            diff = sorted(k for k in set(ref) | set(f.recipe)
                          if json.dumps(ref.get(k), sort_keys=True) != json.dumps(f.recipe.get(k), sort_keys=True))
            if diff:
                out[f.k] = diff
        return out

    def folds(self) -> list[Fold]:
        """The folds of the run's recipe, with their current checkpoints; others left out, named once."""
        odd = self.other_recipe()
        ref = self.recipe()
        for k, diff in odd.items():
            fold = next(f for f in self.all_folds() if f.k == k)
            shown = ", ".join(f"{s} {fold.recipe.get(s)!r} (now {ref.get(s)!r})" for s in diff[:3])
            _warn_once(f"fold {k} of {self.root} was trained with another recipe ({shown}): left out of every "
                       f"result; train it again (notebook 04, folds=[{k}]) or delete {fold.folder}")
        return [f for f in self.all_folds() if f.k not in odd]

    def fold_numbers(self) -> list[int]:
        return [f.k for f in self.folds()]

    def checkpoints(self) -> list[Path]:
        """The current best.pt of every fold of the run's recipe; an error that says what to do when none."""
        found = [f.checkpoint for f in self.folds()]
        if not found:
            raise UserError(f"no {paths.BEST} checkpoint under {self.train}: train first (notebook 04)")
        return found

    def fold(self, k: int) -> Fold:
        for f in self.folds():
            if f.k == k:
                return f
        raise UserError(f"fold {k} of {self.root} has no current checkpoint of the run's recipe "
                        f"(folds: {self.fold_numbers()}): train it (notebook 04)")

    def config(self) -> dict:
        """The config.json of the run's first current fold ({} when none)."""
        folds = self.folds()
        return folds[0].config if folds else {}

    def preprocessed(self) -> Path | None:
        """The preprocessed images the run's folds trained on."""
        pre = self.config().get("preprocessed")
        return Path(pre) if pre else None

    def fingerprints(self) -> dict[str, str]:
        """{fold: hash of its best.pt}: what a result records, to know later whether it is still current."""
        return {str(f.k): f.fingerprint() for f in self.folds()}

    # the decision rule
    def decision(self) -> dict | None:
        """The threshold and aggregation notebook 05 chose (``threshold.json`` in every fold), with where
        it was chosen; None, with a line saying why, when some current fold lacks it or it was chosen on
        other checkpoints (a fold retrained since): a stale decision is never applied."""
        folds = self.folds()
        files = {f.k: f.folder / paths.THRESHOLD for f in folds}
        if not folds or not any(p.exists() for p in files.values()):
            return None
        saved = {k: json.loads(p.read_text()) for k, p in files.items() if p.exists()}
        missing = sorted(set(files) - set(saved))
        chosen_on = {json.dumps(d.get("checkpoints"), sort_keys=True) for d in saved.values()}
        current = self.fingerprints()
        if missing or len(chosen_on) != 1 or (next(iter(saved.values())).get("checkpoints") not in (None, current)):
            why = (f"fold(s) {missing} have none (retrained since?)" if missing else
                   "it was chosen on other checkpoints (a fold retrained since)")
            _warn_once(f"the decision rule of {self.root} ({paths.THRESHOLD}) is stale: {why}; the folds' own training "
                       f"thresholds are used until notebook 05 runs again")
            return None
        return next(iter(saved.values()))

    # holdout, estimates, tracking
    def holdout_info(self) -> dict:
        """holdout.json (how the holdout was drawn, its fingerprint); {} when the run has none."""
        path = paths.holdout_json(self.root)
        return json.loads(path.read_text()) if path.exists() else {}

    def holdout_fingerprint(self) -> str | None:
        return self.holdout_info().get("fingerprint")

    def holdout(self):
        from .holdout import read_holdout

        return read_holdout(self.root)

    def inputs(self) -> dict:
        """What a result of this run is built on: the holdout and the current checkpoints. Stored in
        each result (evaluation.json, summary.json, the submission's record) and compared on read."""
        return {"holdout_fingerprint": self.holdout_fingerprint(), "checkpoints": self.fingerprints()}

    def stale(self, recorded: dict | None, what: str) -> list[str]:
        """Why a result recorded with ``recorded`` inputs no longer describes this run ([] when current)."""
        if not recorded:
            return [f"{what} records no inputs (written by an earlier version): rerun the notebook that writes it"]
        now, out = self.inputs(), []
        if recorded.get("holdout_fingerprint") != now["holdout_fingerprint"]:
            out.append(f"{what} was measured on holdout {recorded.get('holdout_fingerprint')}, the run's holdout is "
                       f"now {now['holdout_fingerprint']} (notebook 03 ran again): rerun from notebook 04")
        then = recorded.get("checkpoints") or {}
        changed = sorted({*then, *now["checkpoints"]}, key=int)
        changed = [int(k) for k in changed if then.get(k) != now["checkpoints"].get(k)]
        if changed:
            out.append(f"{what} was built on other checkpoints: fold(s) {changed} retrained, added or left out "
                       f"since; rerun the notebook that writes it")
        return out

    def evaluation(self) -> dict:
        """evaluation.json (notebook 05's figures); {} when it was not written; a damaged file is an error
        naming it."""
        path = paths.evaluation_json(self.root)
        if not path.exists():
            return {}
        try:
            saved = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: not valid JSON ({exc}): run notebook 05 again") from None
        if not isinstance(saved, dict):
            raise UserError(f"{path}: expected notebook 05's record (a JSON object): run notebook 05 again")
        return saved

    def tracking(self) -> dict:
        """tracking.json: the run's MLflow run id, its store and the folder it was recorded for."""
        path = paths.tracking_json(self.root)
        if not path.exists():
            return {}
        try:
            saved = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            saved = exc
        if not isinstance(saved, dict):
            _warn_once(f"{path} is damaged ({saved if isinstance(saved, Exception) else 'not a JSON object'}): "
                       f"ignored, the run gets a new MLflow run")
            return {}
        return saved


def _fold_dirs(train: Path) -> list[tuple[int, Path]]:
    """(k, folder) of every ``fold<k>`` folder directly under ``train``, in fold order."""
    if not train.is_dir():
        return []
    found = [(int(m.group(1)), d) for d in train.iterdir() if d.is_dir() and (m := re.fullmatch(r"fold(\d+)", d.name))]
    return sorted(found)

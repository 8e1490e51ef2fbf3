"""What a fold's run folder holds, and the policy for a rerun into it: resume, restart, or set aside.

A new (not resumed) run moves the earlier outputs into ``previous/<time>/``; readers never look there.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from .. import paths
from ..errors import CheckpointError
from .config import TrainConfig
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


RESUME_FREE = ("epochs", "workers", "resume", "run_dir")  # may change between an interrupted run and its resume


def config_changes(saved: dict, cfg: TrainConfig) -> list[str]:
    """The settings (other than :data:`RESUME_FREE`) in which a checkpoint's config differs from ``cfg``."""
    now = cfg.to_dict()
    return sorted(k for k in now if k not in RESUME_FREE and k in saved
                  and json.dumps(saved[k], sort_keys=True) != json.dumps(now[k], sort_keys=True))


def check_resumable(ckpt: dict, cfg: TrainConfig, path: Path, margs: dict) -> None:
    """A resume must continue the same model on the same data; refuse before anything is written."""
    if ckpt.get("model_args") != margs:
        raise CheckpointError(f"cannot resume from {path}: it holds {ckpt.get('model_args')}, the config asks for "
                              f"{margs}. Use a new run_dir or resume=False")
    for key in ("preprocessed", "folds", "fold"):
        saved = ckpt.get("config", {}).get(key)
        if saved is not None and saved != getattr(cfg, key):
            raise CheckpointError(f"cannot resume from {path}: {key} was {saved!r}, now {getattr(cfg, key)!r}")


def open_tracker(cfg: TrainConfig, info: DistInfo, device, resume_ckpt, preprocess_cfg: dict, holdout_print):
    """This fold's tracking run (rank 0 only): nested under the pipeline's run when there is one,
    continued when the training resumes, with the full config, the preprocessing and the fingerprints."""
    import hashlib
    import os

    from .. import tracking

    if not info.is_main or cfg.tracking == "none":
        return tracking.Tracker()
    run_id = resume_ckpt.get("mlflow_run_id") if resume_ckpt is not None else None
    tracker = tracking.start(cfg.tracking, Path(cfg.run_dir).parent, f"fold{cfg.fold}", cfg.tracking_uri, run_id,
                             parent_id=os.environ.get(tracking.RUN_ID_ENV),
                             tags={**tracking.provenance_tags(info.world_size, str(device)), "fold": cfg.fold})
    if run_id is None:
        folds = Path(cfg.folds)
        data_print = hashlib.sha1(folds.read_bytes()).hexdigest()[:16] if folds.exists() else None
        tracker.params(cfg.to_dict(), "train.")
        tracker.params(preprocess_cfg, "preprocess.")
        tracker.params({"data_fingerprint": data_print, "holdout_fingerprint": holdout_print,
                        "world_size": info.world_size})
    return tracker

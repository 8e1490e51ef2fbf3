"""The search space file of ``tune``: which training settings may be searched, and how a trial draws them.

Written like a sweep grid, over notebook 04's training settings (``04.`` optional): a list is a choice,
``{low, high}`` a range (whole numbers when low, high and step are; ``log: true`` for a log scale).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError

NOT_SEARCHED = ("run_dir", "preprocessed", "folds", "fold", "resume", "tracking", "tracking_uri", "workers")


def read_space(path) -> dict:
    """``{TrainConfig field: [choices] or {low, high, log, step}}`` from a YAML or JSON file, checked."""
    import yaml

    from ..learn.config import TrainConfig

    path = Path(path)
    if not path.exists():
        raise UserError(f"search space file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text())  # YAML reads JSON too
    except yaml.YAMLError as exc:
        raise UserError(f"search space file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"search space file {path} must map training settings to choices or ranges")
    space = {}
    for key, spec in raw.items():
        nb, _, name = str(key).rpartition(".")
        if nb not in ("", "04", "04_train") or name not in TrainConfig.__dataclass_fields__ or name in NOT_SEARCHED:
            raise UserError(f"search space file {path}: {key!r} is not a training setting to search (notebook 04's "
                            f"parameters, e.g. lr, model, loss, ema_decay)")
        if isinstance(spec, list) and spec:
            space[name] = spec
        elif isinstance(spec, dict) and {"low", "high"} <= set(spec) <= {"low", "high", "log", "step"}:
            if not all(isinstance(spec[k], (int, float)) for k in ("low", "high")) or spec["low"] >= spec["high"]:
                raise UserError(f"search space file {path}: {key} needs numbers low < high, got {spec}")
            space[name] = dict(spec)
        else:
            raise UserError(f"search space file {path}: {key} must be a list of choices or {{low, high, log, step}}, "
                            f"got {spec!r}")
    return space


def suggest(trial, space: dict) -> dict:
    """The trial's settings: ``suggest_categorical`` for lists, ``suggest_int`` for whole-number ranges,
    ``suggest_float`` otherwise."""
    out = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            out[name] = trial.suggest_categorical(name, spec)
        elif all(isinstance(spec.get(k, 1), int) for k in ("low", "high", "step")):
            out[name] = trial.suggest_int(name, spec["low"], spec["high"], step=spec.get("step", 1),
                                          log=bool(spec.get("log")))
        else:
            out[name] = trial.suggest_float(name, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")),
                                            step=spec.get("step"))
    return out

"""Commands of the learn stage: ``folds``, ``train``."""
from __future__ import annotations

import json
from pathlib import Path

from .common import data_arg, positive


def _folds(a) -> int:
    from ..learn.holdout import split_holdout, write_holdout
    from ..learn.sampling import folds_summary, make_folds
    from ..tables import read_table

    strategy = a.strategy or ("paired" if a.neg_per_pos is not None else "all")
    df = read_table(a.data_dir, "train")
    holdout, df, info = split_holdout(df, a.holdout_fraction, a.holdout_seed)
    folds = make_folds(df, strategy, a.neg_per_pos if a.neg_per_pos is not None else 1.0, a.n_splits, a.seed,
                       a.label_control)  # before anything is written: a table that cannot make folds leaves no files
    write_holdout(Path(a.out).parent, holdout, info)
    print(f"holdout: {info['patients']} patients, {info['images']} images ({info['how']}), fingerprint "
          f"{info['fingerprint']} -> {Path(a.out).parent / 'holdout.csv'}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    folds.to_csv(a.out, index=False)
    print(f"{strategy}: {len(folds)} of {len(df)} images -> {a.out}")
    print(folds_summary(folds).to_string())
    return 0


def _train(a) -> int:
    from ..errors import UserError
    from ..learn.config import TrainConfig
    from ..learn.distributed import shutdown_distributed
    from ..learn.train import train
    from ..workflow.pipeline import parse_value

    cfg = TrainConfig.from_json_file(a.config) if a.config else TrainConfig()
    for kv in a.set or []:
        key, sep, value = kv.partition("=")
        if not sep:
            raise UserError(f"--set {kv!r}: expected KEY=VALUE")
        cfg = cfg.replace(**{key: parse_value(value, getattr(TrainConfig(), key, None))})
    try:
        result = train(cfg)
    finally:
        shutdown_distributed()
    print(json.dumps(result, indent=2, default=str))
    return 0


def train_epilog() -> str:
    """Every TrainConfig field with its default and meaning, for ``train --help``."""
    from ..learn.config import field_help, setting_kind

    rows = [f"  {name:20s} {setting_kind(name):11s} {json.dumps(default):30s} {meaning}"
            for name, default, meaning in field_help()]
    return ("TrainConfig fields (for --config JSON and --set KEY=VALUE). Kind: model = changing it makes a rerun "
            "start the fold afresh (earlier outputs set aside); bookkeeping = a rerun with another value resumes "
            "where it stopped.\n" + "\n".join(rows))


def register(command) -> None:
    """Add these commands' parsers (``command(name, help)`` returns a subparser)."""
    s = command("folds", "sampling strategy + patient-grouped stratified folds -> folds.csv")
    data_arg(s)
    s.add_argument("--out", required=True, help="folds.csv to write")
    s.add_argument("--strategy", default=None, choices=["all", "paired"],
                   help="all: every image | paired: cancer patients + neg_per_pos cancer-free patients each "
                        "(default: paired when --neg-per-pos is given, else all)")
    s.add_argument("--neg-per-pos", type=float, default=None, help="paired: cancer-free patients per cancer patient")
    s.add_argument("--n-splits", type=positive(int), default=5, help="number of folds")
    s.add_argument("--label-control", default="none", choices=["none", "shuffled"],
                   help="shuffled: permute cancer labels between breasts (a leakage control)")
    s.add_argument("--seed", type=int, default=0, help="seeds the undersampling and the folds")
    s.add_argument("--holdout-fraction", type=float, default=0.15,
                   help="patients locked away before the folds (holdout.csv beside --out; 0: none)")
    s.add_argument("--holdout-seed", type=int, default=0, help="which patients the holdout takes")
    s.set_defaults(func=_folds)


    s = command("train", "train one fold (under torchrun: one process per GPU, DDP)", epilog_fn=train_epilog)
    s.add_argument("--config", default=None, help="JSON file of TrainConfig fields")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one TrainConfig field (repeatable)")
    s.set_defaults(func=_train)

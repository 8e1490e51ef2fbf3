"""Training loop for one fold: AMP (fp16 + GradScaler or bf16), accumulation, warmup+cosine, EMA,
a non-finite-loss guard, per-breast validation, checkpoints, resume, and DDP under ``torchrun``.

Read top to bottom: config -> data -> model -> optimizer/schedule -> resume -> epochs (train,
validate per breast, checkpoint) -> restore best. Everything a run produces goes to ``run_dir``:
config.json, metrics.csv, last.pt, best.pt, val_predictions.csv. Under DDP only rank 0 writes.

Scaling rule: ``lr`` is for the global batch ``batch_size * accum_steps * world_size``. When you
add GPUs at a fixed per-GPU batch, scale ``lr`` linearly (2 GPUs: 2x), as in Goyal et al. 2017.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from .. import metrics, paths, tracking
from ..errors import UserError
from ..provenance import provenance
from .checkpoint import best_epoch as recorded_best_epoch
from .checkpoint import epochs_done, load_checkpoint, save_checkpoint, unwrap
from .config import AugmentConfig, TrainConfig, resolve_model
from .data import BreastViews, MammoDataset, create_loader, read_split, train_batches
from .distributed import (
    DistInfo,
    all_gather_objects,
    any_across_ranks,
    barrier,
    broadcast_buffers,
    broadcast_module,
    init_distributed,
    ranks_agree,
    mean_across_ranks,
)
from .engine import (
    autocast,
    create_grad_scaler,
    model_inputs,
    predict_loader,
    resolve_amp,
)
from .metadata import aux_loss, aux_targets
from .models import build_model
from .optim import batches_per_epoch, build_optimizer, build_scheduler, compute_loss
from .determinism import determinism, deterministic, epoch_seed
from .runs import check_resumable, config_changes, file_fingerprint, move_aside_previous, open_tracker
from .sampling import data_breast_prevalence
from .sampling import pos_weight as compute_pos_weight

log = logging.getLogger(__name__)

MAX_NONFINITE = 5  # stop after this many non-finite losses in a row: the run has diverged


# --------------------------------------------------------------------------------------------------
# Pieces (each testable on its own)
# --------------------------------------------------------------------------------------------------

def model_args(cfg: TrainConfig, train_df: pd.DataFrame | None = None) -> dict:
    """The model a config asks for; metadata encoders and auxiliary heads are fitted on ``train_df``
    (the fold's training rows). Keys at their defaults are left out, so older checkpoints still match."""
    from .metadata import fit_aux, fit_metadata

    args = dict(name=cfg.model, drop_rate=cfg.drop_rate)
    if cfg.metadata:
        args["metadata"] = fit_metadata(train_df, cfg.metadata)
    if cfg.aux_targets:
        args["aux"] = fit_aux(train_df, cfg.aux_targets)
    if cfg.fusion != "none":
        args["fusion"] = cfg.fusion
    return args


def fold_datasets(train_df: pd.DataFrame, val_df: pd.DataFrame, cfg: TrainConfig, margs: dict):
    """(training, validation) datasets: images, or with ``fusion`` the breasts they make up, carrying
    the metadata and auxiliary targets the model reads."""
    meta, aux = list(margs.get("metadata", {})), list(margs.get("aux", {}))
    augment_cfg = AugmentConfig(**cfg.augment)
    if cfg.fusion == "none":
        return (MammoDataset(train_df, True, augment_cfg, cfg.seed, meta, aux),
                MammoDataset(val_df, False, meta_columns=meta))
    return (BreastViews(MammoDataset(train_df, True, augment_cfg, cfg.seed), train_df, meta, aux),
            BreastViews(MammoDataset(val_df, False), val_df, meta))


class NonFiniteLossError(FloatingPointError):
    pass


@dataclass
class StepState:
    step: int = 0                 # optimizer steps taken
    nonfinite_in_a_row: int = 0
    nonfinite_total: int = 0
    skipped_by_scaler: int = 0    # fp16: steps the GradScaler skipped because gradients overflowed


def optimizer_step(model, opt, scaler, clip_grad: float, state: StepState) -> bool:
    """Unscale, clip, step through the scaler (which skips the step on inf/NaN gradients), update the
    scale. Returns whether the weights were updated."""
    if clip_grad:
        scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    scale_before = scaler.get_scale() if scaler.is_enabled() else None
    scaler.step(opt)
    scaler.update()
    skipped = scale_before is not None and scaler.get_scale() < scale_before
    state.skipped_by_scaler += int(skipped)
    opt.zero_grad(set_to_none=True)
    return not skipped


def train_one_epoch(model, loader, opt, sched, scaler, cfg: TrainConfig, device, amp_dtype, pos_weight: float,
                    state: StepState, ema=None, progress: bool = True, info: DistInfo = DistInfo()) -> dict:
    """One pass over ``loader`` with accumulation, clipping and the non-finite-loss guard.

    Under DDP the ranks agree on a skip: a non-finite loss on any rank skips the batch on every rank
    (before any backward, so the gradient all-reduce stays in step), and it is counted once."""
    from ..progress import bar as progress_bar

    model.train()
    opt.zero_grad(set_to_none=True)
    losses, n_images, t0 = [], 0, time.perf_counter()
    n_batches = batches_per_epoch(len(loader), cfg)
    bar = progress_bar(total=n_batches, desc="train", unit="batch", leave=False, disable=not progress)
    micro = 0
    aux_spec = getattr(unwrap(model), "aux_spec", None)  # any nn.Module trains; MammoNet may have heads
    for i, (x, target) in enumerate(loader):
        if i >= n_batches:
            break
        x = x.to(device, non_blocking=True)
        if device.type == "cuda" and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        y = target["cancer"].to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            out = model(x, **model_inputs(target, device))
        loss = compute_loss(out["cancer"], y, cfg.loss, pos_weight, cfg.focal_gamma)
        if aux_spec:  # auxiliary heads: rows without a value are left out of each target's loss
            targets = aux_targets(target["aux"], aux_spec, len(y), device)
            loss = loss + aux_loss({k: out[f"aux_{k}"] for k in aux_spec}, targets, aux_spec)
        if any_across_ranks(not torch.isfinite(loss), info):
            state.nonfinite_in_a_row += 1
            state.nonfinite_total += 1
            log.warning("non-finite loss (%s on this rank) at step %d: batch skipped on every rank (%d in a row)",
                        loss.item(), state.step, state.nonfinite_in_a_row)
            opt.zero_grad(set_to_none=True)
            micro = 0
            if state.nonfinite_in_a_row >= MAX_NONFINITE:
                raise NonFiniteLossError(
                    f"{state.nonfinite_in_a_row} non-finite losses in a row at step {state.step}: lower lr, "
                    f"check the inputs for NaN/inf, or use amp='bf16'/'none'")
            continue
        state.nonfinite_in_a_row = 0
        scaler.scale(loss / cfg.accum_steps).backward()
        micro += 1
        losses.append(loss.item())
        n_images += int(target["view_mask"].sum()) if "view_mask" in target else x.shape[0]
        if micro == cfg.accum_steps or i == n_batches - 1:
            if optimizer_step(model, opt, scaler, cfg.clip_grad, state):
                sched.step()  # the schedule follows the updates taken (fp16 skips some)
            if ema is not None:
                ema.update(unwrap(model), step=state.step)
            state.step += 1
            micro = 0
        bar.update()
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", refresh=False)
    bar.close()
    seconds = time.perf_counter() - t0
    return {"train_loss": float(np.mean(losses)) if losses else float("nan"), "images": n_images,
            "img_per_s": n_images / seconds if seconds > 0 else float("nan"), "train_seconds": seconds}


def validation_loader(val_ds: MammoDataset, cfg: TrainConfig, info: DistInfo = DistInfo()):
    """This rank's share of the validation images (every ``world_size``-th), built once per run: its
    persistent workers then serve every epoch instead of starting anew each time."""
    from torch.utils.data import Subset

    shard = list(range(info.rank, len(val_ds), info.world_size))
    return create_loader(Subset(val_ds, shard), cfg.batch_size * 2, cfg.workers)


def validate(model, loader, val_df: pd.DataFrame, device, amp_dtype, cfg: TrainConfig,
             info: DistInfo = DistInfo()) -> tuple[dict, pd.DataFrame]:
    """Per-breast metrics and the image-level predictions. Under DDP each rank predicts its shard
    (:func:`validation_loader`) and the predictions are gathered: every image is scored exactly once."""
    shard, samples = loader.dataset.indices, loader.dataset.dataset  # samples: images, or breasts (fusion)
    preds = predict_loader([model], loader, len(samples), device, amp_dtype, channels_last=device.type == "cuda")
    parts = all_gather_objects({i: preds[i] for i in shard}, info)
    merged = np.full(len(samples), np.nan)
    for part in parts:
        for i, p in part.items():
            merged[i] = p
    df = val_df.assign(pred=samples.image_predictions(merged))  # a fused breast's score on each of its images
    breasts = metrics.aggregate_breasts(df, how=cfg.aggregate)
    return metrics.summarize(breasts), df


def _epoch_line(number: int, cfg: TrainConfig, row: dict, improved: bool, seconds_so_far: float, epochs_now: int) -> str:
    """The console line of epoch ``number`` (1-based, like metrics.csv and summary.json)."""
    eta = seconds_so_far / max(1, epochs_now) * (cfg.epochs - number)
    return (f"epoch {number}/{cfg.epochs}  loss {row['train_loss']:.4f}  val pF1 {row['val_pf1']:.3f} "
            f"(thr {row['val_threshold']:.2f})  AUC {row['val_auc']:.3f}  {row['img_per_s']:.1f} img/s  "
            f"ETA {eta / 60:.1f} min{'  *best*' if improved else ''}")


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------

def train(cfg: TrainConfig, progress: bool = True, on_epoch=None) -> dict:
    """Train one fold; returns the best validation metrics and where everything was written.
    ``on_epoch(number, row)`` is called after each epoch is saved (a search's pruner reads it and may raise)."""
    from ..prepare.manifest import read_config

    info, device = init_distributed()
    cfg = cfg.replace(model=resolve_model(cfg.model, device.type == "cuda", verbose=info.is_main))
    progress = progress and info.is_main
    run = Path(cfg.run_dir)
    last_path, best_path = run / paths.LAST, run / paths.BEST
    train_df, val_df = read_split(Path(cfg.preprocessed), cfg.folds, cfg.fold)
    margs = model_args(cfg, train_df)  # metadata encoders and auxiliary heads are fitted on the training rows
    resume_ckpt = None
    if cfg.resume and last_path.exists():
        resume_ckpt = load_checkpoint(last_path, device)
        changed = config_changes(resume_ckpt.get("config", {}), cfg, resume_ckpt.get("folds_fingerprint"))
        if cfg.resume == "auto" and changed:
            if info.is_main:
                print(f"{last_path} was trained with other settings ({', '.join(changed)}): starting afresh, "
                      f"its outputs moved aside", flush=True)
            resume_ckpt = None
        else:
            check_resumable(resume_ckpt, cfg, last_path, margs)  # validate first, then write
    amp_dtype = resolve_amp(cfg.amp, device)
    holdout_json = paths.holdout_json(Path(cfg.folds).parent)  # the holdout beside folds.csv, if any
    holdout_print = json.loads(holdout_json.read_text()).get("fingerprint") if holdout_json.exists() else None
    record = {**cfg.to_dict(), "model_args": margs, "world_size": info.world_size,
              "holdout_fingerprint": holdout_print, "provenance": {**provenance(), **determinism(device)},
              "started": time.time(), "folder": str(run.resolve()), "folds_fingerprint": file_fingerprint(cfg.folds)}
    if info.is_main:
        if resume_ckpt is None:
            move_aside_previous(run)
        run.mkdir(parents=True, exist_ok=True)
        (run / paths.CONFIG).write_text(json.dumps(record, indent=2))
    log.info("device %s, autocast %s, world size %d", device, amp_dtype, info.world_size)

    # data
    train_ds, val_ds = fold_datasets(train_df, val_df, cfg, margs)
    sampler = train_batches(train_ds.labels, cfg.batch_size, cfg.sampler, cfg.pos_fraction, cfg.seed, info.rank,
                            info.world_size)
    train_loader = create_loader(train_ds, cfg.batch_size, cfg.workers, batch_sampler=sampler)
    val_loader = validation_loader(val_ds, cfg, info)
    if cfg.pos_weight == "auto":
        pw = 1.0 if cfg.sampler == "balanced" else compute_pos_weight(train_ds.labels)
    else:
        pw = float(cfg.pos_weight or 1.0)
    log.info("train %d %s (%d positive), val %d; pos_weight %.2f", len(train_ds),
             "images" if cfg.fusion == "none" else "breasts",
             int(train_ds.labels.sum()), len(val_ds), pw)

    # model: initialized under its own seed (the same on every rank) without touching the global RNG
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model(pretrained=cfg.pretrained, **margs)
    model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    ema = None
    if cfg.ema_decay:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=cfg.ema_decay)
    fwd_model = model
    if info.enabled and cfg.sync_bn and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        fwd_model = model
    elif cfg.sync_bn and info.enabled:
        log.warning("sync_bn needs CUDA (NCCL); BatchNorm statistics stay per process on CPU")
    if info.enabled:
        fwd_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    steps_per_epoch = math.ceil(batches_per_epoch(len(train_loader), cfg) / cfg.accum_steps)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch)
    scaler = create_grad_scaler(device, amp_dtype)

    # Epochs are counted from 1 everywhere a person reads them (console, metrics.csv, checkpoints, summary);
    # ``done`` is the number of epochs finished, the loop's ``epoch`` the 0-based index that seeds the sampler.
    state, done, best, best_epoch, history = StepState(), 0, -float("inf"), 0, []
    if resume_ckpt is not None:
        model.load_state_dict(resume_ckpt["model"])
        opt.load_state_dict(resume_ckpt["optimizer"])
        sched.load_state_dict(resume_ckpt["scheduler"])
        scaler.load_state_dict(resume_ckpt["scaler"])
        if ema is not None and resume_ckpt.get("ema"):
            ema.module.load_state_dict(resume_ckpt["ema"])
        done, state.step = epochs_done(resume_ckpt), resume_ckpt["step"]
        best, best_epoch = resume_ckpt["best_metric"], recorded_best_epoch(resume_ckpt)
        history = resume_ckpt.get("history", [])
        if info.is_main:
            print(f"resuming {run} after epoch {done}/{cfg.epochs}" if done < cfg.epochs else
                  f"{run} has finished its {done} epochs with these settings: nothing to train", flush=True)

    prevalence = data_breast_prevalence(cfg.folds)
    preprocess_cfg = read_config(cfg.preprocessed).to_json() if (Path(cfg.preprocessed) / paths.PREPROCESS_CONFIG).exists() else {}
    tracker = open_tracker(cfg, info, device, resume_ckpt, preprocess_cfg, holdout_print)
    t_start = time.perf_counter()
    # dropout and the rest of torch's global stream: seeded per epoch (and rank), restored afterwards, so
    # a resumed fold draws what the uninterrupted one drew; the tracking run ends however the loop ends
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), deterministic(device), \
            tracking.ends(tracker):
        for epoch in range(done, cfg.epochs):
            number = epoch + 1
            torch.manual_seed(epoch_seed(cfg.seed, info.rank, epoch))
            sampler.set_epoch(epoch)
            tr = train_one_epoch(fwd_model, train_loader, opt, sched, scaler, cfg, device, amp_dtype, pw, state, ema,
                                 progress, info)
            tr["train_loss"] = mean_across_ranks(tr["train_loss"], info)
            broadcast_buffers(model, info)
            if ema is not None:  # each rank averaged its own BatchNorm statistics: validate rank 0's EMA everywhere
                broadcast_module(ema.module, info)
            eval_model = ema.module if ema is not None else model
            agree = ranks_agree(eval_model, info)
            val, val_pred = validate(eval_model, val_loader, val_df, device, amp_dtype, cfg, info)
            row = {"epoch": number, "step": state.step, "lr": opt.param_groups[0]["lr"], **tr,
                   "nonfinite_skipped": state.nonfinite_total, "scaler_skipped": state.skipped_by_scaler,
                   "scale": scaler.get_scale() if scaler.is_enabled() else 1.0,
                   "ranks_agree": agree,
                   **{f"val_{k}": v for k, v in val.items()}}
            history.append(row)
            score = val[cfg.select_metric]
            if score != score and info.is_main:
                log.warning("epoch %d: validation %s is undefined (the fold's breasts are all of one class?): until an "
                            "epoch has one, best.pt follows the latest epoch", number, cfg.select_metric)
            score = -float("inf") if score != score else score  # NaN never beats a defined score
            improved = score > best or best == -float("inf")
            common = dict(config=cfg.to_dict(), model_args=margs, preprocess=preprocess_cfg, epoch=number,
                          epoch_base=1,
                          data_breast_prevalence=prevalence, holdout_fingerprint=holdout_print, step=state.step,
                          history=history, mlflow_run_id=tracker.run_id, mlflow_uri=tracker.uri, folder=str(run.resolve()),
                          folds_fingerprint=record["folds_fingerprint"],
                          world_size=info.world_size, provenance={**provenance(), **determinism(device)})
            if improved:
                best, best_epoch = score, number
            if info.is_main:
                pd.DataFrame(history).to_csv(run / paths.METRICS, index=False)
                if improved:
                    save_checkpoint(best_path, model=unwrap(eval_model).state_dict(), best_metric=best, best_epoch=number,
                                    threshold=val["threshold"], aggregate=cfg.aggregate, val_metrics=val, **common)
                    val_pred.to_csv(run / paths.VAL_PREDICTIONS, index=False)
                save_checkpoint(last_path, model=unwrap(model).state_dict(), optimizer=opt.state_dict(),
                                scheduler=sched.state_dict(), scaler=scaler.state_dict(),
                                ema=ema.module.state_dict() if ema is not None else None, best_metric=best,
                                best_epoch=best_epoch, **common)
                line = _epoch_line(number, cfg, row, improved, time.perf_counter() - t_start, number - done)
                print(line, flush=True)
                tracker.metrics({k: v for k, v in row.items() if k not in ("epoch", "step")}, step=number)
                if on_epoch is not None:
                    on_epoch(number, row)
            barrier(info)

    if not best_path.exists():
        tracker.end("FAILED")
        raise UserError(f"{run}: no epoch to run: epochs={cfg.epochs} and {done} done already (raise epochs to "
                        f"continue training)")
    ckpt = load_checkpoint(best_path, device)  # what this run reports is what best.pt holds
    if info.is_main:
        tracker.metrics({f"best_val_{k}": v for k, v in ckpt["val_metrics"].items()}, step=ckpt["best_epoch"])
        tracker.metrics({"best_epoch": ckpt["best_epoch"]})
        for name in (paths.CONFIG, paths.METRICS, paths.VAL_PREDICTIONS):
            tracker.artifact(run / name)
        if cfg.log_checkpoints:
            tracker.artifact(best_path, "checkpoints")
        tracker.end()
    return {"run_dir": str(run), "model": cfg.model, "best_epoch": ckpt["best_epoch"], "best_metric": ckpt["best_metric"],
            "select_metric": cfg.select_metric, "threshold": ckpt["threshold"],
            **{f"val_{k}": v for k, v in ckpt["val_metrics"].items()},
            "epochs_run": len(history), "nonfinite_skipped": state.nonfinite_total,
            "scaler_skipped": state.skipped_by_scaler, "world_size": info.world_size}

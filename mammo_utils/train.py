"""Training loop for one fold: AMP, accumulation, warmup+cosine/OneCycle, EMA, NaN guard, checkpoints.

Read top to bottom: config -> data -> model -> optimizer/schedule -> resume -> epochs (train,
validate per breast, checkpoint) -> restore best. Everything a run produces goes to ``run_dir``:
config.json, metrics.csv, last.pt, best.pt, val_predictions.csv.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import metrics
from .data import AUX_TARGETS, AugmentConfig, MammoDataset, create_loader, read_split
from .models import build_model
from .sampling import BalancedBatchSampler, pos_weight as compute_pos_weight

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """All knobs of a run; saved as config.json and inside every checkpoint."""

    run_dir: str = "runs/train"
    preprocessed: str = "data/synthetic/train_256x128"  # folder with manifest.csv (+ preprocess.json)
    folds: str = "runs/folds.csv"
    fold: int = 0
    # model
    model: str = "efficientnet_b4"
    head: str = "timm"                 # timm: dropout+linear; mlp: the seed project's head
    pretrained: str | None = None      # local weights file; None = random init
    in_chans: int = 1
    drop_rate: float = 0.3
    drop_path_rate: float = 0.1
    aux: list = field(default_factory=list)  # auxiliary targets: birads, density, view, invasive
    aux_weight: float = 0.2
    freeze_backbone: bool = False      # train the head only (the seed's choice; full fine-tuning is better)
    # optimization
    epochs: int = 10
    batch_size: int = 16
    accum_steps: int = 1               # effective batch = batch_size * accum_steps
    lr: float = 3e-4
    weight_decay: float = 1e-2
    schedule: str = "cosine"           # cosine (with linear warmup) | onecycle | constant
    warmup_epochs: float = 1.0
    clip_grad: float = 1.0             # max grad norm; 0 = off
    amp: str = "auto"                  # auto (CUDA: bf16 if supported else fp16; CPU: off) | bf16 | fp16 | none
    channels_last: bool = True         # CUDA only
    compile: bool = False              # torch.compile on CUDA
    ema_decay: float = 0.0             # e.g. 0.999; 0 = off
    # loss and sampling
    loss: str = "bce"                  # bce | focal
    pos_weight: str | float | None = "auto"  # auto: n_neg/n_pos with random sampling, 1 with balanced
    focal_gamma: float = 2.0
    label_smoothing: float = 0.0
    sampler: str = "balanced"          # balanced | random
    pos_fraction: float = 0.25
    augment: dict = field(default_factory=dict)  # AugmentConfig overrides
    # evaluation
    select_metric: str = "pf1"         # pf1 | auc: which validation metric picks best.pt
    aggregate: str = "mean"            # per-breast aggregation of image predictions
    # bookkeeping
    max_nonfinite: int = 5             # stop after this many non-finite losses in a row
    max_steps_per_epoch: int | None = None
    workers: int = 2
    seed: int = 0
    resume: bool = False
    mlflow: bool = False

    def replace(self, **changes) -> "TrainConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_json_file(cls, path) -> "TrainConfig":
        return cls().replace(**json.loads(Path(path).read_text()))


# --------------------------------------------------------------------------------------------------
# Pieces (each testable on its own)
# --------------------------------------------------------------------------------------------------

def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a config value, or None for full precision."""
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "none":
        return None
    if amp in ("bf16", "fp16"):
        if amp == "fp16" and device.type != "cuda":
            raise ValueError("fp16 autocast needs CUDA; use amp='bf16' on CPU")
        return torch.bfloat16 if amp == "bf16" else torch.float16
    raise ValueError(f"amp must be auto, bf16, fp16 or none; got {amp!r}")


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def compute_loss(out: dict, target: dict, cfg: TrainConfig, pos_weight: float) -> torch.Tensor:
    """BCE (with pos_weight, label smoothing) or focal loss on the cancer logit, plus weighted aux CE."""
    logit = out["cancer"].float()
    y = target["cancer"].float()
    if cfg.label_smoothing:
        y = y * (1 - cfg.label_smoothing) + 0.5 * cfg.label_smoothing
    pw = torch.tensor(pos_weight, device=logit.device)
    if cfg.loss == "bce":
        loss = F.binary_cross_entropy_with_logits(logit, y, pos_weight=pw)
    elif cfg.loss == "focal":
        bce = F.binary_cross_entropy_with_logits(logit, y, reduction="none", pos_weight=pw)
        p = torch.sigmoid(logit)
        p_t = p * y + (1 - p) * (1 - y)
        loss = ((1 - p_t) ** cfg.focal_gamma * bce).mean()
    else:
        raise ValueError(f"loss must be bce or focal, got {cfg.loss!r}")
    for name in cfg.aux:
        if name in out and name in target:
            loss = loss + cfg.aux_weight * F.cross_entropy(out[name].float(), target[name], ignore_index=-1)
    return loss


def lr_lambda(schedule: str, total_steps: int, warmup_steps: int):
    """Multiplier of the base LR at an optimizer step: linear warmup then cosine to 0 (or constant)."""
    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1 + math.cos(math.pi * progress))
    return f


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm weights (1-D tensors)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


def build_scheduler(opt, cfg: TrainConfig, steps_per_epoch: int):
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total,
                                                   pct_start=min(0.3, max(0.05, cfg.warmup_epochs / max(1, cfg.epochs))))
    if cfg.schedule in ("cosine", "constant"):
        return torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.schedule, total, int(cfg.warmup_epochs * steps_per_epoch)))
    raise ValueError(f"schedule must be cosine, onecycle or constant; got {cfg.schedule!r}")


def batches_per_epoch(n_loader_batches: int, cfg: TrainConfig) -> int:
    """Loader batches one epoch consumes (capped by ``max_steps_per_epoch`` optimizer steps)."""
    if cfg.max_steps_per_epoch is None:
        return n_loader_batches
    return min(n_loader_batches, cfg.max_steps_per_epoch * cfg.accum_steps)


class NonFiniteLossError(FloatingPointError):
    pass


@dataclass
class StepState:
    step: int = 0                 # optimizer steps taken
    nonfinite_in_a_row: int = 0
    nonfinite_total: int = 0


def train_one_epoch(model, loader, opt, sched, scaler, cfg: TrainConfig, device, amp_dtype, pos_weight: float,
                    state: StepState, ema=None, progress: bool = True) -> dict:
    """One pass over ``loader`` with accumulation, clipping and the non-finite-loss guard."""
    from tqdm.auto import tqdm

    model.train()
    opt.zero_grad(set_to_none=True)
    losses, n_images, t0 = [], 0, time.perf_counter()
    n_batches = batches_per_epoch(len(loader), cfg)
    bar = tqdm(loader, total=n_batches, desc="train", unit="batch", leave=False, disable=not progress)
    micro = 0
    for i, (x, target) in enumerate(bar):
        if i >= n_batches:
            break
        x = x.to(device, non_blocking=True)
        if cfg.channels_last and device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        target = {k: v.to(device, non_blocking=True) for k, v in target.items()}
        with autocast(device, amp_dtype):
            out = model(x)
        loss = compute_loss(out, target, cfg, pos_weight)
        if not torch.isfinite(loss):
            state.nonfinite_in_a_row += 1
            state.nonfinite_total += 1
            log.warning("non-finite loss (%s) at step %d: batch skipped (%d in a row)", loss.item(), state.step,
                        state.nonfinite_in_a_row)
            opt.zero_grad(set_to_none=True)
            micro = 0
            if state.nonfinite_in_a_row >= cfg.max_nonfinite:
                raise NonFiniteLossError(
                    f"{state.nonfinite_in_a_row} non-finite losses in a row at step {state.step}: lower lr, "
                    f"check the inputs for NaN/inf, or use amp='bf16'/'none'")
            continue
        state.nonfinite_in_a_row = 0
        scaler.scale(loss / cfg.accum_steps).backward()
        micro += 1
        losses.append(loss.item())
        n_images += x.shape[0]
        if micro == cfg.accum_steps or i == n_batches - 1:
            if cfg.clip_grad:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            if state.step < getattr(sched, "total_steps", math.inf):  # OneCycleLR raises past its end
                sched.step()
            if ema is not None:
                ema.update(model, step=state.step)
            state.step += 1
            micro = 0
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    seconds = time.perf_counter() - t0
    return {"train_loss": float(np.mean(losses)) if losses else float("nan"), "images": n_images,
            "img_per_s": n_images / seconds if seconds > 0 else float("nan"), "train_seconds": seconds}


@torch.inference_mode()
def predict_loader(model, loader, device, amp_dtype, channels_last: bool = False, progress: bool = False,
                   tta_flip: bool = False) -> np.ndarray:
    """Sigmoid probabilities for every sample of ``loader``, in order."""
    from tqdm.auto import tqdm

    model.eval()
    out = []
    for x, _ in tqdm(loader, desc="predict", unit="batch", leave=False, disable=not progress):
        x = x.to(device, non_blocking=True)
        if channels_last and device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            p = torch.sigmoid(model(x)["cancer"].float())
            if tta_flip:
                p = (p + torch.sigmoid(model(torch.flip(x, dims=[2]))["cancer"].float())) / 2
        out.append(p.cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def validate(model, loader, val_df: pd.DataFrame, device, amp_dtype, cfg: TrainConfig) -> tuple[dict, pd.DataFrame]:
    """Per-breast pF1 at the best threshold, AUC, ... and the image-level predictions."""
    preds = predict_loader(model, loader, device, amp_dtype, cfg.channels_last)
    df = val_df.assign(pred=preds)
    breasts = metrics.aggregate_breasts(df, how=cfg.aggregate)
    return metrics.summarize(breasts), df


def save_checkpoint(path: Path, **payload) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def unwrap(model: nn.Module) -> nn.Module:
    """The module whose state_dict has clean keys (no ``_orig_mod.`` from torch.compile)."""
    return getattr(model, "_orig_mod", model)


def model_args(cfg: TrainConfig) -> dict:
    return dict(name=cfg.model, head=cfg.head, in_chans=cfg.in_chans, drop_rate=cfg.drop_rate,
                drop_path_rate=cfg.drop_path_rate, aux_classes={k: AUX_TARGETS[k][1] for k in cfg.aux})


def load_checkpoint(path, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)


def load_model(path, device="cpu") -> tuple[nn.Module, dict]:
    """Model with the weights of a checkpoint (EMA weights when the run used EMA) and the checkpoint."""
    ckpt = load_checkpoint(path)
    model = build_model(**ckpt["model_args"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------

def train(cfg: TrainConfig, progress: bool = True) -> dict:
    """Train one fold; returns the best validation metrics and where everything was written."""
    from .preprocess import read_config

    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp_dtype = resolve_amp(cfg.amp, device)
    log.info("device %s, autocast %s", device, amp_dtype)

    # data
    train_df, val_df = read_split(Path(cfg.preprocessed), cfg.folds, cfg.fold)
    aug = AugmentConfig(**cfg.augment)
    train_ds = MammoDataset(train_df, train=True, augment_cfg=aug, in_chans=cfg.in_chans, seed=cfg.seed, aux=tuple(cfg.aux))
    val_ds = MammoDataset(val_df, train=False, in_chans=cfg.in_chans, aux=tuple(cfg.aux))
    sampler = None
    if cfg.sampler == "balanced":
        sampler = BalancedBatchSampler(train_ds.labels, cfg.batch_size, cfg.pos_fraction, seed=cfg.seed, drop_last=False)
    elif cfg.sampler != "random":
        raise ValueError(f"sampler must be balanced or random, got {cfg.sampler!r}")
    train_loader = create_loader(train_ds, cfg.batch_size, True, cfg.workers, cfg.seed, batch_sampler=sampler)
    val_loader = create_loader(val_ds, cfg.batch_size * 2, False, cfg.workers)
    if cfg.pos_weight == "auto":
        pw = 1.0 if cfg.sampler == "balanced" else compute_pos_weight(train_ds.labels)
    else:
        pw = float(cfg.pos_weight or 1.0)
    log.info("train %d images (%d positive), val %d images; pos_weight %.2f", len(train_ds),
             int(train_ds.labels.sum()), len(val_ds), pw)

    # model: initialized under its own seed without touching the global RNG state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model(pretrained=cfg.pretrained, **model_args(cfg))
    if cfg.freeze_backbone:
        model.backbone.requires_grad_(False)
    model.to(device)
    if cfg.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    ema = None
    if cfg.ema_decay:
        from timm.utils import ModelEmaV3
        ema = ModelEmaV3(model, decay=cfg.ema_decay)
    fwd_model = torch.compile(model) if cfg.compile and device.type == "cuda" else model

    steps_per_epoch = math.ceil(batches_per_epoch(len(train_loader), cfg) / cfg.accum_steps)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    state, start_epoch, best, best_epoch, history = StepState(), 0, -float("inf"), -1, []
    last_path, best_path = run / "last.pt", run / "best.pt"
    if cfg.resume and last_path.exists():
        ckpt = load_checkpoint(last_path, device)
        unwrap(model).load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and ckpt.get("ema"):
            ema.module.load_state_dict(ckpt["ema"])
        start_epoch, state.step = ckpt["epoch"] + 1, ckpt["step"]
        best, best_epoch = ckpt["best_metric"], ckpt["best_epoch"]
        history = ckpt.get("history", [])
        log.info("resumed from %s at epoch %d", last_path, start_epoch)

    prevalence = float(metrics.aggregate_breasts(train_df.assign(pred=0.0)).cancer.mean())
    tracker = _mlflow_start(cfg) if cfg.mlflow else None
    preprocess_cfg = read_config(cfg.preprocessed).to_json() if (Path(cfg.preprocessed) / "preprocess.json").exists() else {}
    for epoch in range(start_epoch, cfg.epochs):
        train_ds.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        tr = train_one_epoch(fwd_model, train_loader, opt, sched, scaler, cfg, device, amp_dtype, pw, state, ema, progress)
        eval_model = ema.module if ema is not None else model
        val, val_pred = validate(eval_model, val_loader, val_df, device, amp_dtype, cfg)
        row = {"epoch": epoch, "step": state.step, "lr": opt.param_groups[0]["lr"], **tr,
               "nonfinite_skipped": state.nonfinite_total, **{f"val_{k}": v for k, v in val.items()}}
        history.append(row)
        pd.DataFrame(history).to_csv(run / "metrics.csv", index=False)
        score = val[cfg.select_metric]
        score = -float("inf") if score != score else score  # NaN never wins
        improved = score > best
        common = dict(config=asdict(cfg), model_args=model_args(cfg), preprocess=preprocess_cfg, epoch=epoch,
                      train_breast_prevalence=prevalence,
                      step=state.step, history=history)
        if improved:
            best, best_epoch = score, epoch
            save_checkpoint(best_path, model=unwrap(eval_model).state_dict(), best_metric=best, best_epoch=epoch,
                            threshold=val["threshold"], aggregate=cfg.aggregate, val_metrics=val, **common)
            val_pred.to_csv(run / "val_predictions.csv", index=False)
        save_checkpoint(last_path, model=unwrap(model).state_dict(), optimizer=opt.state_dict(),
                        scheduler=sched.state_dict(), scaler=scaler.state_dict(),
                        ema=ema.module.state_dict() if ema is not None else None, best_metric=best,
                        best_epoch=best_epoch, **common)
        log.info("epoch %d: loss %.4f  val pF1 %.3f (thr %.2f)  AUC %.3f  %.1f img/s%s", epoch, tr["train_loss"],
                 val["pf1"], val["threshold"], val["auc"], tr["img_per_s"], "  *best*" if improved else "")
        if tracker:
            tracker.log_metrics({k: v for k, v in row.items() if isinstance(v, (int, float)) and v == v}, step=epoch)

    if tracker:
        tracker.end_run()
    if not best_path.exists():
        raise RuntimeError(f"no epoch was run (epochs={cfg.epochs}, resumed at {start_epoch})")
    ckpt = load_checkpoint(best_path, device)
    unwrap(model).load_state_dict(ckpt["model"])  # the best weights, restored
    return {"run_dir": str(run), "best_epoch": ckpt["best_epoch"], "best_metric": ckpt["best_metric"],
            "select_metric": cfg.select_metric, "threshold": ckpt["threshold"], **{f"val_{k}": v for k, v in ckpt["val_metrics"].items()},
            "epochs_run": len(history), "nonfinite_skipped": state.nonfinite_total}


def _mlflow_start(cfg: TrainConfig):
    try:
        import mlflow
    except ImportError:
        log.warning("mlflow=True but mlflow is not installed: `pip install mlflow`; continuing without it")
        return None
    mlflow.start_run(run_name=Path(cfg.run_dir).name)
    mlflow.log_params({k: v for k, v in asdict(cfg).items() if isinstance(v, (int, float, str, bool))})
    return mlflow

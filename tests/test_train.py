"""Training loop behaviour: schedule, losses, NaN guard, accumulation, fp16 scaler, EMA, checkpoints, resume."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from mammo_utils.errors import CheckpointError, UserError
from mammo_utils.learn import optim
from mammo_utils.learn import train as T
from mammo_utils.learn.checkpoint import load_checkpoint, load_model
from mammo_utils.learn.config import TrainConfig, resolve_model
from mammo_utils.learn.engine import create_grad_scaler, resolve_amp
from mammo_utils.learn.models import build_model
from mammo_utils.learn.sampling import patient_folds


@pytest.fixture(scope="module")
def prepared(tiny_data, tiny_png, tmp_path_factory):
    """Tiny data preprocessed to 64x32 and split into 3 folds."""
    root = tmp_path_factory.mktemp("prepared")
    shutil.copytree(tiny_png, root / "png")
    folds = patient_folds(pd.read_csv(tiny_data / "train.csv"), n_splits=3, seed=0)
    folds.to_csv(root / "folds.csv", index=False)
    return root


def small_cfg(prepared, run_dir, **kw):
    base = dict(run_dir=str(run_dir), preprocessed=str(prepared / "png"), folds=str(prepared / "folds.csv"),
                model="resnet10t", epochs=2, batch_size=8, lr=1e-3, workers=0, max_steps_per_epoch=2)
    base.update(kw)
    return TrainConfig(**base)


class Tiny(nn.Module):
    """A BN-free model so micro-batches and one large batch have the same gradient."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return {"cancer": self.fc(self.conv(x).mean((2, 3))).squeeze(1)}


@pytest.mark.parametrize("amp", ["none", "fp16"])
def test_accumulation_equals_large_batch_gradient(amp):
    """Four micro-batches of 2 give the gradient of one batch of 8, also through the fp16 GradScaler."""
    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 16, 16), (torch.rand(8) > 0.5).float()
    cfg = TrainConfig(accum_steps=4, clip_grad=1e6 if amp == "fp16" else 0.0)  # clipping forces the unscale
    a, b = Tiny(), Tiny()
    b.load_state_dict(a.state_dict())
    loader = [(x[i:i + 2], {"cancer": y[i:i + 2]}) for i in range(0, 8, 2)]
    captured = {}

    class Recorder(torch.optim.SGD):
        def step(self, closure=None):
            captured.update({n: p.grad.clone() for n, p in a.named_parameters()})
            return super().step(closure)

    opt = Recorder(a.parameters(), lr=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    cpu = torch.device("cpu")
    dtype = resolve_amp(amp, cpu)
    scaler = create_grad_scaler(cpu, dtype)
    assert scaler.is_enabled() == (amp == "fp16")
    state = T.StepState()
    T.train_one_epoch(a, loader, opt, sched, scaler, cfg, cpu, dtype, 1.0, state, progress=False)
    assert state.step == 1
    loss = optim.compute_loss(b(x)["cancer"], y)
    loss.backward()
    tol = dict(rtol=2e-2, atol=2e-3) if amp == "fp16" else dict(rtol=1e-5, atol=1e-6)
    for n, p in b.named_parameters():
        torch.testing.assert_close(captured[n], p.grad, **tol)


def test_nonfinite_guard_skips_then_stops(monkeypatch):
    monkeypatch.setattr(T, "MAX_NONFINITE", 3)
    cfg = TrainConfig(accum_steps=1, clip_grad=1.0)
    model = Tiny()
    good = (torch.rand(2, 1, 16, 16), {"cancer": torch.tensor([0.0, 1.0])})
    bad = (torch.full((2, 1, 16, 16), float("inf")), {"cancer": torch.tensor([0.0, 1.0])})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    state = T.StepState()
    T.train_one_epoch(model, [good, bad, good], opt, sched, scaler, cfg, torch.device("cpu"), None, 1.0, state,
                      progress=False)
    assert state.nonfinite_total == 1 and state.step == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(T.NonFiniteLossError, match="3 non-finite losses in a row"):
        T.train_one_epoch(model, [bad] * 5, opt, sched, scaler, cfg, torch.device("cpu"), None, 1.0, state,
                          progress=False)


def test_train_checkpoints_best_and_resume(prepared, tmp_path):
    cfg = small_cfg(prepared, tmp_path / "run", epochs=2)
    result = T.train(cfg, progress=False)
    run = tmp_path / "run"
    for name in ("config.json", "metrics.csv", "last.pt", "best.pt", "val_predictions.csv"):
        assert (run / name).exists(), name
    history = pd.read_csv(run / "metrics.csv")
    assert list(history.epoch) == [1, 2]  # counted from 1, as the console counts
    assert {"train_loss", "lr", "val_pf1", "val_auc", "val_threshold", "img_per_s"} <= set(history.columns)
    best = load_checkpoint(run / "best.pt")  # weights_only=True
    assert best["best_epoch"] == result["best_epoch"]
    assert best["config"]["model"] == "resnet10t" and best["preprocess"]["size"] in ([64, 32], (64, 32))
    assert best["world_size"] == 1 and "git_commit" in best["provenance"] and best["provenance"]["versions"]["torch"]
    saved = json.loads((run / "config.json").read_text())
    assert saved["world_size"] == 1 and saved["provenance"]["versions"]["timm"]
    # best.pt holds the weights that made val_predictions.csv: scoring it again gives the same numbers
    from mammo_utils.learn.data import MammoDataset, create_loader, read_split
    from mammo_utils.learn.engine import predict_loader

    model, _ = load_model(run / "best.pt")
    preds = pd.read_csv(run / "val_predictions.csv")
    assert preds.pred.between(0, 1).all() and "prediction_id" in preds
    _, val_df = read_split(prepared / "png", prepared / "folds.csv", 0)
    again = predict_loader([model], create_loader(MammoDataset(val_df), 8, 0), len(val_df), torch.device("cpu"))
    np.testing.assert_allclose(preds.pred, again, atol=1e-5)
    assert result["val_auc"] == pytest.approx(best["val_metrics"]["auc"], nan_ok=True)

    # resume continues from the saved epoch
    cfg2 = cfg.replace(epochs=3, resume=True)
    T.train(cfg2, progress=False)
    history2 = pd.read_csv(run / "metrics.csv")
    assert list(history2.epoch) == [1, 2, 3]
    assert load_checkpoint(run / "last.pt")["epoch"] == 3
    assert history2.step.iloc[2] > history2.step.iloc[1]


def test_best_checkpoint_is_the_best_epoch(prepared, tmp_path, monkeypatch):
    scores = iter([0.9, 0.3, 0.5])

    def fake_validate(model, loader, val_df, device, amp_dtype, cfg, info=None):
        s = next(scores)
        return ({"pf1": s, "auc": s, "threshold": 0.5, "pf1_raw": s, "pr_auc": s, "sensitivity": 1.0,
                 "specificity": 1.0, "breasts": 1, "positives": 1}, val_df.assign(pred=s))

    monkeypatch.setattr(T, "validate", fake_validate)
    cfg = small_cfg(prepared, tmp_path / "run", epochs=3, max_steps_per_epoch=1)
    result = T.train(cfg, progress=False)
    assert result["best_epoch"] == 1 and result["best_metric"] == 0.9
    best, last = load_checkpoint(tmp_path / "run" / "best.pt"), load_checkpoint(tmp_path / "run" / "last.pt")
    assert best["epoch"] == 1 and last["epoch"] == 3
    assert any(not torch.equal(best["model"][k], last["model"][k]) for k in best["model"] if best["model"][k].is_floating_point())


def test_pretrained_from_local_file(tmp_path, caplog):
    import timm
    from safetensors.torch import save_file

    src = timm.create_model("resnet10t", pretrained=False, num_classes=1000)
    with torch.no_grad():
        src.conv1[0].weight.fill_(0.5)
    path = tmp_path / "resnet10t.safetensors"
    save_file(src.state_dict(), str(path))
    model = build_model("resnet10t", pretrained=path)
    w = model.backbone.conv1[0].weight
    assert w.shape[1] == 1 and torch.allclose(w, torch.full_like(w, 1.5))  # RGB stem summed to one channel
    # a missing file is an error, never a silent random start; None is the explicit random choice
    with pytest.raises(UserError, match=r"pretrained weights .*missing.pth not found"):
        build_model("resnet10t", pretrained=tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not weights")
    with pytest.raises(UserError, match="could not load pretrained"):
        build_model("resnet10t", pretrained=bad)
    assert not torch.allclose(build_model("resnet10t", pretrained=None).backbone.conv1[0].weight, w)
    # misspelled arguments are refused, by the builder and when a checkpoint names them
    with pytest.raises(TypeError):
        build_model("resnet10t", drop_rat=0.1)
    from mammo_utils.learn.models import model_from_args

    with pytest.raises(CheckpointError, match="unknown key"):
        model_from_args({"name": "resnet10t", "drop_rat": 0.1})
    assert model_from_args({"name": "resnet10t", "drop_rate": 0.2, "head": "timm"}).head[0].p == 0.2  # old key dropped


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_step_with_batchnorm_model_on_cpu(amp):
    """One optimizer step of a timm CNN (BatchNorm, the head) under each autocast dtype, on CPU: the
    output is in the autocast dtype, the fp16 scaler is on, every weight stays finite."""
    cpu = torch.device("cpu")
    dtype = resolve_amp(amp, cpu)
    model = build_model("resnet10t")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = create_grad_scaler(cpu, dtype)
    x, y = torch.rand(2, 1, 64, 32), torch.tensor([0.0, 1.0])
    with torch.autocast("cpu", dtype=dtype):
        out = model(x)
    loss = optim.compute_loss(out["cancer"], y)
    scaler.scale(loss).backward()
    T.optimizer_step(model, opt, scaler, 1.0, T.StepState())
    assert torch.isfinite(loss) and out["cancer"].dtype == dtype
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert scaler.is_enabled() == (amp == "fp16")


@pytest.mark.slow
def test_efficientnet_b4_builds_and_steps_on_cpu():
    """The notebooks' default model: one step at a small size in fp32 (CPU autocast of B4 takes minutes;
    real-size throughput under AMP is measured by benchmarks/gpu.py and benchmarks/train_throughput.py)."""
    model = build_model("efficientnet_b4")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    before = model.conv_stem.weight.detach().clone() if hasattr(model, "conv_stem") else None
    out = model(torch.rand(2, 1, 128, 64))
    optim.compute_loss(out["cancer"], torch.tensor([0.0, 1.0])).backward()
    T.optimizer_step(model, opt, create_grad_scaler(torch.device("cpu"), None), 1.0, T.StepState())
    assert out["cancer"].shape == (2,) and all(torch.isfinite(p).all() for p in model.parameters())
    if before is not None:
        assert not torch.equal(before, model.conv_stem.weight)


def test_resolve_amp():
    cpu = torch.device("cpu")
    assert resolve_amp("bf16", cpu) == torch.bfloat16 and resolve_amp("fp16", cpu) == torch.float16
    assert resolve_amp("auto", cpu) is None and resolve_amp("none", cpu) is None
    with pytest.raises(UserError):
        resolve_amp("fp8", cpu)


def test_schedule_warmup_then_cosine():
    f = optim.lr_lambda("cosine", total_steps=110, warmup_steps=10)
    assert [round(f(s), 3) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]       # linear warmup
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.5)   # cosine: half-way at the middle
    assert f(110) == pytest.approx(0.0, abs=1e-9) and f(35) > f(60) > f(85)
    g = optim.lr_lambda("constant", total_steps=110, warmup_steps=10)
    assert g(0) == pytest.approx(0.1) and g(60) == g(109) == 1.0
    # through a real optimizer: the lr falls to ~0 by the last step
    model = Tiny()
    cfg = TrainConfig(epochs=2, lr=0.1, warmup_epochs=0.5)
    opt = optim.build_optimizer(model, cfg)
    sched = optim.build_scheduler(opt, cfg, steps_per_epoch=10)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[4] == pytest.approx(0.1) and lrs[-1] < 0.01 and lrs[12] < lrs[8]


def test_focal_loss_down_weights_easy_examples():
    logit, y = torch.tensor([3.0, -3.0, 0.5, -0.2]), torch.tensor([1.0, 0.0, 0.0, 1.0])
    p = torch.sigmoid(logit)
    p_t = p * y + (1 - p) * (1 - y)
    bce = -(y * torch.log(p) + (1 - y) * torch.log(1 - p))
    expect = ((1 - p_t) ** 2 * bce).mean()
    torch.testing.assert_close(optim.compute_loss(logit, y, "focal", focal_gamma=2.0), expect)
    torch.testing.assert_close(optim.compute_loss(logit, y, "focal", focal_gamma=0.0), bce.mean())
    torch.testing.assert_close(optim.compute_loss(logit, y, "bce"), bce.mean())
    assert optim.compute_loss(logit, y, "focal") < 0.5 * optim.compute_loss(logit, y, "bce")
    # pos_weight scales the positive terms of BCE
    torch.testing.assert_close(optim.compute_loss(logit, y, "bce", pos_weight=3.0),
                               (-(3 * y * torch.log(p) + (1 - y) * torch.log(1 - p))).mean())


def test_fp16_overflow_step_is_skipped_and_scale_halved():
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = create_grad_scaler(torch.device("cpu"), torch.float16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scale0 = scaler.get_scale()
    loss = model(torch.rand(2, 1, 16, 16))["cancer"].sum()
    scaler.scale(loss).backward()
    model.fc.weight.grad[0, 0] = float("inf")  # an fp16 overflow
    state = T.StepState()
    T.optimizer_step(model, opt, scaler, 1.0, state)
    assert scaler.get_scale() == scale0 / 2 and state.skipped_by_scaler == 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed on a skipped step"
        assert torch.isfinite(v).all()
    # a good step afterwards is taken
    scaler.scale(model(torch.rand(2, 1, 16, 16))["cancer"].sum()).backward()
    T.optimizer_step(model, opt, scaler, 1.0, state)
    assert state.skipped_by_scaler == 1 and not torch.equal(model.fc.weight, before["fc.weight"])


def test_clipping_happens_after_unscaling():
    """With a scale of 2**16, clipping the scaled gradients would shrink the step 65536-fold."""
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    loss = 100 * model(torch.rand(4, 1, 16, 16))["cancer"].sum()
    scaler.scale(loss).backward()
    T.optimizer_step(model, opt, scaler, 0.01, T.StepState())
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm().item() == pytest.approx(0.01, rel=1e-3)


def test_fp16_on_cpu_trains_and_resume_restores_the_scaler(prepared, tmp_path):
    run = tmp_path / "run"
    cfg = small_cfg(prepared, run, epochs=1, amp="fp16")
    T.train(cfg, progress=False)
    history = pd.read_csv(run / "metrics.csv")
    assert np.isfinite(history.train_loss).all() and np.isfinite(history.val_auc).all()
    last = load_checkpoint(run / "last.pt")
    assert last["scaler"]["scale"] > 1
    last["scaler"]["scale"] = 1024.0  # a scale training would not reach by itself in 2 steps
    torch.save(last, run / "last.pt")
    T.train(cfg.replace(epochs=2, resume=True), progress=False)
    history = pd.read_csv(run / "metrics.csv")
    assert history.scale.iloc[1] <= 1024.0, "the resumed run must continue from the saved scaler"


def test_ema_weights_are_validated_and_saved(prepared, tmp_path):
    """With a decay this close to 1 the EMA stays at the weights of the first step: best.pt must hold
    the EMA weights (not the trained ones), and the validation predictions must be theirs."""
    from mammo_utils.learn.data import MammoDataset, create_loader, read_split
    from mammo_utils.learn.engine import predict_loader

    run = tmp_path / "run"
    cfg = small_cfg(prepared, run, epochs=1, ema_decay=0.999999, lr=1e-2, max_steps_per_epoch=4)
    T.train(cfg, progress=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        init = build_model(**T.model_args(cfg)).state_dict()
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    w = "backbone.conv1.0.weight"
    torch.testing.assert_close(last["ema"][w], best["model"][w])
    assert (best["model"][w] - init[w]).norm() < 0.5 * (last["model"][w] - init[w]).norm()
    _, val_df = read_split(prepared / "png", prepared / "folds.csv", 0)
    loader = create_loader(MammoDataset(val_df), 8, 0)
    ema_model, _ = load_model(run / "best.pt")
    expect = predict_loader([ema_model], loader, len(val_df), torch.device("cpu"))
    np.testing.assert_allclose(pd.read_csv(run / "val_predictions.csv").pred, expect, atol=1e-5)


def test_resume_with_another_model_fails_before_writing(prepared, tmp_path):
    run = tmp_path / "run"
    T.train(small_cfg(prepared, run, epochs=1, max_steps_per_epoch=1), progress=False)
    before = (run / "config.json").read_text()
    with pytest.raises(CheckpointError, match="cannot resume"):
        T.train(small_cfg(prepared, run, epochs=2, resume=True, model="resnet14t"), progress=False)
    assert (run / "config.json").read_text() == before


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"not a checkpoint at all"])
def test_corrupt_checkpoint_names_the_file(tmp_path, content):
    path = tmp_path / "best.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"checkpoint {path} is corrupt or truncated"):
        load_checkpoint(path)


def test_config_checks_types_and_names():
    cfg = TrainConfig()
    assert cfg.replace(epochs=3).epochs == 3 and cfg.replace(lr=1).lr == 1.0
    with pytest.raises(UserError, match="epochs must be int"):
        cfg.replace(epochs="ten")
    with pytest.raises(UserError, match="unknown TrainConfig"):
        cfg.replace(epochz=3)
    with pytest.raises(UserError, match="schedule must be one of"):
        cfg.replace(schedule="onecycle")
    assert TrainConfig.from_dict({"epochs": 2, "head": "timm", "mlflow": False}).epochs == 2  # old configs load


def test_cli_train_with_overrides(prepared, tmp_path):
    from mammo_utils.__main__ import main

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"preprocessed": str(prepared / "png"), "folds": str(prepared / "folds.csv"),
                               "model": "resnet10t", "workers": 0, "batch_size": 8}))
    assert main(["train", "--config", str(cfg), "--set", f"run_dir={tmp_path / 'r'}", "--set", "epochs=1",
                 "--set", "max_steps_per_epoch=1", "--set", "loss=focal"]) == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["loss"] == "focal" and saved["epochs"] == 1
    assert (tmp_path / "r" / "best.pt").exists()
    assert main(["train", "--config", str(cfg), "--set", "epochs=ten"]) == 2
    assert main(["train", "--config", str(tmp_path / "missing.json")]) == 2


def test_every_remaining_knob_has_an_effect(prepared, tmp_path, capsys, monkeypatch):
    """model=None, drop_rate, weight_decay, pos_weight, augment, select_metric and seed do what they say."""
    assert resolve_model(None, cuda=False) == "resnet10t" and "no GPU" in capsys.readouterr().out
    assert resolve_model(None, cuda=True, verbose=False) == "efficientnet_b4"
    assert build_model("resnet10t", drop_rate=0.42).head[0].p == 0.42
    model = Tiny()
    groups = optim.build_optimizer(model, TrainConfig(weight_decay=0.05)).param_groups
    assert groups[0]["weight_decay"] == 0.05 and all(p.ndim >= 2 for p in groups[0]["params"])
    assert groups[1]["weight_decay"] == 0.0 and all(p.ndim == 1 for p in groups[1]["params"])
    with pytest.raises(UserError, match="augment has unknown"):
        TrainConfig(augment={"vflipp": 1.0})
    # select_metric: the epoch with the best AUC wins when asked, even with a worse pF1
    scores = iter([(0.9, 0.6), (0.5, 0.8), (0.7, 0.7)])

    def fake_validate(model, loader, val_df, device, amp_dtype, cfg, info=None):
        pf1, auc = next(scores)
        return ({"pf1": pf1, "auc": auc, "threshold": 0.5, "pf1_raw": pf1, "pr_auc": auc, "sensitivity": 1.0,
                 "specificity": 1.0, "breasts": 1, "positives": 1}, val_df.assign(pred=auc))

    monkeypatch.setattr(T, "validate", fake_validate)
    result = T.train(small_cfg(prepared, tmp_path / "auc", epochs=3, max_steps_per_epoch=1, select_metric="auc"),
                     progress=False)
    assert result["best_epoch"] == 2
    monkeypatch.undo()
    # pos_weight "auto": 1 with balanced batches, n_neg/n_pos with random batches (logged)
    import logging

    with caplog_at(logging.INFO) as records:
        T.train(small_cfg(prepared, tmp_path / "rnd", epochs=1, max_steps_per_epoch=1, sampler="random"), progress=False)
    assert any("pos_weight" in r and not r.endswith("pos_weight 1.00") for r in records)
    # seed: same seed, same run; another seed, another run
    # augment: the overrides reach the training images (all off is another run than the default)
    off = dict(vflip=0.0, rotate_deg=0.0, scale=0.0, shift=0.0, brightness=0.0, contrast=0.0, gamma=0.0, dropout_boxes=0)
    for name, seed, augment in (("s1", 3, {}), ("s2", 3, {}), ("s3", 4, {}), ("off", 3, off)):
        T.train(small_cfg(prepared, tmp_path / name, epochs=1, max_steps_per_epoch=2, seed=seed, augment=augment),
                progress=False)
    la, lb, lc, loff = (pd.read_csv(tmp_path / s / "metrics.csv").train_loss[0] for s in ("s1", "s2", "s3", "off"))
    assert la == lb and la != lc and la != loff


class caplog_at:
    """Collect the messages of mammo_utils.learn.train at a level (pytest's caplog is function-scoped only)."""

    def __init__(self, level):
        import logging

        self.level, self.records, self.logger = level, [], logging.getLogger("mammo_utils.learn.train")

    def __enter__(self):
        import logging

        class H(logging.Handler):
            def emit(h, record):
                self.records.append(record.getMessage())

        self.handler, self.old = H(), self.logger.level
        self.logger.addHandler(self.handler)
        self.logger.setLevel(self.level)
        return self.records

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.old)


def record_augmentations(monkeypatch, log_file):
    """Wrap data.augment so every draw appends (input digest, output digest) to ``log_file``: the
    DataLoader's worker processes are forked, so they inherit the wrapper and write to the same file."""
    import hashlib

    from mammo_utils.learn import data as D

    real = D.augment

    def recording(img, cfg, rng):
        out = real(img, cfg, rng)
        line = f"{hashlib.sha1(img.tobytes()).hexdigest()} {hashlib.sha1(out.tobytes()).hexdigest()}\n"
        with open(log_file, "a") as f:
            f.write(line)
        return out

    monkeypatch.setattr(D, "augment", recording)


def record_validation_loads(monkeypatch, log_file):
    """Wrap the PNG reader of the dataset so every load appends (process id, path) to ``log_file``."""
    import os

    from mammo_utils.learn import data as D

    real = D.load_png

    def recording(path):
        with open(log_file, "a") as f:
            f.write(f"{os.getpid()} {path}\n")
        return real(path)

    monkeypatch.setattr(D, "load_png", recording)


def test_workers_draw_new_augmentations_and_reproduce(prepared, tmp_path, monkeypatch):
    """With 2 persistent workers over 2 full epochs, every draw of an image (repeats of a positive
    within an epoch included) gets its own augmentation, and the run equals a run without workers.
    Validation reads its images in the same 2 worker processes every epoch: its loader is built once."""
    from mammo_utils.learn.data import read_split

    runs = {}
    for workers in (2, 0):
        log_file = tmp_path / f"draws_{workers}.txt"
        record_augmentations(monkeypatch, log_file)
        record_validation_loads(monkeypatch, tmp_path / f"loads_{workers}.txt")
        run = tmp_path / f"w{workers}"
        T.train(small_cfg(prepared, run, epochs=2, workers=workers, max_steps_per_epoch=None, pos_fraction=0.75),
                progress=False)
        monkeypatch.undo()
        draws = pd.read_csv(log_file, sep=" ", names=["image", "augmented"])
        runs[workers] = (draws, pd.read_csv(run / "metrics.csv"))
    draws, history = runs[2]
    per_image = draws.groupby("image").augmented.agg(["size", "nunique"])
    repeated = per_image[per_image["size"] >= 2]
    print(f"{len(draws)} draws of {len(per_image)} images; {len(repeated)} drawn 2+ times, "
          f"max {per_image['size'].max()} times")
    assert len(repeated) >= 10 and per_image["size"].max() >= 3  # the balanced sampler repeats positives
    assert (repeated["size"] == repeated["nunique"]).all(), "a repeated draw reused an augmentation"
    # the same seed gives the same run whatever the number of workers
    assert sorted(map(tuple, draws.to_numpy())) == sorted(map(tuple, runs[0][0].to_numpy()))
    np.testing.assert_allclose(history.train_loss, runs[0][1].train_loss, rtol=1e-6)
    _, val_df = read_split(prepared / "png", prepared / "folds.csv", 0)
    loads = pd.read_csv(tmp_path / "loads_2.txt", sep=" ", names=["pid", "path"])
    val_loads = loads[loads.path.isin(set(val_df.abs_path))]
    assert len(val_loads) == 2 * len(val_df)  # every validation image, once per epoch
    assert val_loads.pid.nunique() == 2, "validation started new worker processes"


def test_a_run_reports_only_its_own_outputs(prepared, tmp_path, monkeypatch):
    """An undefined selection metric (a validation fold of one class) keeps the latest epoch as best.pt,
    in a fresh folder and in a folder holding an earlier run's best.pt, which is moved aside, not reported."""
    run = tmp_path / "run"
    T.train(small_cfg(prepared, run, epochs=1, max_steps_per_epoch=1), progress=False)
    earlier = load_checkpoint(run / "best.pt")

    def undefined(model, loader, val_df, device, amp_dtype, cfg, info=None):
        nan = float("nan")
        return ({"pf1": nan, "auc": nan, "threshold": 0.5, "pf1_raw": nan, "pr_auc": nan, "sensitivity": nan,
                 "specificity": nan, "breasts": 3, "positives": 0}, val_df.assign(pred=0.1))

    monkeypatch.setattr(T, "validate", undefined)
    for folder in (tmp_path / "fresh", run):
        result = T.train(small_cfg(prepared, folder, epochs=2, max_steps_per_epoch=1, resume=False), progress=False)
        best = load_checkpoint(folder / "best.pt")
        assert result["best_epoch"] == best["best_epoch"] == 2 and np.isnan(result["val_auc"])
        assert len(best["history"]) == 2 and pd.read_csv(folder / "metrics.csv").epoch.tolist() == [1, 2]
    moved = list((run / "previous").glob("*/best.pt"))
    assert len(moved) == 1 and load_checkpoint(moved[0])["val_metrics"] == earlier["val_metrics"]


def test_rerun_continues_an_interrupted_fold_and_restarts_a_changed_one(prepared, tmp_path, capsys):
    """resume="auto" (the default, and notebook 04's): the same settings continue from last.pt (a rerun of
    a finished fold trains nothing); other settings start afresh with the old outputs moved aside."""
    run = tmp_path / "run"
    T.train(small_cfg(prepared, run, epochs=1, max_steps_per_epoch=1), progress=False)  # "interrupted" after 1
    T.train(small_cfg(prepared, run, epochs=2, max_steps_per_epoch=1), progress=False)
    assert pd.read_csv(run / "metrics.csv").epoch.tolist() == [1, 2] and not (run / "previous").exists()
    assert "resuming" in capsys.readouterr().out
    stamp = (run / "last.pt").stat().st_mtime_ns
    T.train(small_cfg(prepared, run, epochs=2, max_steps_per_epoch=1), progress=False)
    assert (run / "last.pt").stat().st_mtime_ns == stamp and "nothing to train" in capsys.readouterr().out
    T.train(small_cfg(prepared, run, epochs=2, max_steps_per_epoch=1, lr=5e-4), progress=False)
    assert "other settings (lr)" in capsys.readouterr().out
    assert len(list((run / "previous").glob("*/last.pt"))) == 1
    assert load_checkpoint(run / "last.pt")["config"]["lr"] == 5e-4

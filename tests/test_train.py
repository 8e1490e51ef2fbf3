"""Training loop behaviour: NaN guard, accumulation, checkpoints, resume, heads, pretrained loading."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from mammo_utils import train as T
from mammo_utils.models import SeedHead, build_model
from mammo_utils.preprocess import PreprocessConfig, run_preprocess
from mammo_utils.sampling import patient_folds


@pytest.fixture(scope="module")
def prepared(tiny_data, tmp_path_factory):
    """Tiny data preprocessed to 64x32 and split into 3 folds."""
    root = tmp_path_factory.mktemp("prepared")
    out = root / "png"
    run_preprocess(tiny_data, "train", out, PreprocessConfig(size=(64, 32)), jobs=1, progress=False)
    folds = patient_folds(pd.read_csv(tiny_data / "train.csv"), n_splits=3, seed=0)
    folds.to_csv(root / "folds.csv", index=False)
    return root


def small_cfg(prepared, run_dir, **kw):
    base = dict(run_dir=str(run_dir), preprocessed=str(prepared / "png"), folds=str(prepared / "folds.csv"),
                model="resnet10t", epochs=2, batch_size=8, lr=1e-3, workers=0, max_steps_per_epoch=2,
                drop_path_rate=0.0)
    base.update(kw)
    return T.TrainConfig(**base)


class Tiny(nn.Module):
    """A BN-free model so micro-batches and one large batch have the same gradient."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return {"cancer": self.fc(self.conv(x).mean((2, 3))).squeeze(1)}


def test_accumulation_equals_large_batch_gradient():
    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 16, 16), (torch.rand(8) > 0.5).float()
    cfg = T.TrainConfig(accum_steps=4, clip_grad=0.0)
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
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    state = T.StepState()
    T.train_one_epoch(a, loader, opt, sched, scaler, cfg, torch.device("cpu"), None, 1.0, state, progress=False)
    assert state.step == 1
    loss = T.compute_loss(b(x), {"cancer": y}, cfg, 1.0)
    loss.backward()
    for n, p in b.named_parameters():
        torch.testing.assert_close(captured[n], p.grad, rtol=1e-5, atol=1e-6)


def test_nonfinite_guard_skips_then_stops():
    cfg = T.TrainConfig(accum_steps=1, max_nonfinite=3, clip_grad=1.0)
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


def test_train_checkpoints_best_restored_and_resume(prepared, tmp_path):
    cfg = small_cfg(prepared, tmp_path / "run", epochs=2)
    result = T.train(cfg, progress=False)
    run = tmp_path / "run"
    for name in ("config.json", "metrics.csv", "last.pt", "best.pt", "val_predictions.csv"):
        assert (run / name).exists(), name
    history = pd.read_csv(run / "metrics.csv")
    assert list(history.epoch) == [0, 1]
    assert {"train_loss", "lr", "val_pf1", "val_auc", "val_threshold", "img_per_s"} <= set(history.columns)
    best = T.load_checkpoint(run / "best.pt")  # weights_only=True
    assert best["best_epoch"] == result["best_epoch"]
    assert best["config"]["model"] == "resnet10t" and best["preprocess"]["size"] in ([64, 32], (64, 32))
    model, _ = T.load_model(run / "best.pt")
    preds = pd.read_csv(run / "val_predictions.csv")
    assert preds.pred.between(0, 1).all() and "prediction_id" in preds

    # resume continues from the saved epoch
    cfg2 = cfg.replace(epochs=3, resume=True)
    T.train(cfg2, progress=False)
    history2 = pd.read_csv(run / "metrics.csv")
    assert list(history2.epoch) == [0, 1, 2]
    assert T.load_checkpoint(run / "last.pt")["epoch"] == 2
    assert history2.step.iloc[2] > history2.step.iloc[1]


def test_best_checkpoint_is_the_best_epoch(prepared, tmp_path, monkeypatch):
    scores = iter([0.9, 0.3, 0.5])

    def fake_validate(model, loader, val_df, device, amp_dtype, cfg):
        s = next(scores)
        return ({"pf1": s, "auc": s, "threshold": 0.5, "pf1_raw": s, "pr_auc": s, "sensitivity": 1.0,
                 "specificity": 1.0, "breasts": 1, "positives": 1}, val_df.assign(pred=s))

    monkeypatch.setattr(T, "validate", fake_validate)
    cfg = small_cfg(prepared, tmp_path / "run", epochs=3, max_steps_per_epoch=1)
    result = T.train(cfg, progress=False)
    assert result["best_epoch"] == 0 and result["best_metric"] == 0.9
    best, last = T.load_checkpoint(tmp_path / "run" / "best.pt"), T.load_checkpoint(tmp_path / "run" / "last.pt")
    assert best["epoch"] == 0 and last["epoch"] == 2
    assert any(not torch.equal(best["model"][k], last["model"][k]) for k in best["model"] if best["model"][k].is_floating_point())


def test_seed_head_shape_and_aux():
    head = SeedHead(32)
    head.eval()
    assert head(torch.rand(3, 32, 4, 2)).shape == (3, 1)
    model = build_model("resnet10t", head="mlp", in_chans=1, aux_classes={"density": 4}).eval()
    out = model(torch.rand(2, 1, 64, 32))
    assert out["cancer"].shape == (2,) and out["density"].shape == (2, 4)


def test_pretrained_from_local_file(tmp_path, caplog):
    import timm
    from safetensors.torch import save_file

    src = timm.create_model("resnet10t", pretrained=False, num_classes=1000)
    with torch.no_grad():
        src.conv1[0].weight.fill_(0.5)
    path = tmp_path / "resnet10t.safetensors"
    save_file(src.state_dict(), str(path))
    model = build_model("resnet10t", pretrained=path, in_chans=1)
    w = model.backbone.conv1[0].weight
    assert w.shape[1] == 1 and torch.allclose(w, torch.full_like(w, 1.5))  # RGB stem summed to one channel
    caplog.clear()
    build_model("resnet10t", pretrained=tmp_path / "missing.pth")
    assert "RANDOM initialization" in caplog.text
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not weights")
    with pytest.raises(RuntimeError, match="could not load pretrained"):
        build_model("resnet10t", pretrained=bad)


def test_efficientnet_b4_step_bf16_cpu_1024x512():
    model = build_model("efficientnet_b4", in_chans=1, drop_path_rate=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = torch.rand(2, 1, 1024, 512), torch.tensor([0.0, 1.0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    loss = T.compute_loss(out, {"cancer": y}, T.TrainConfig(), 1.0)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and out["cancer"].dtype == torch.bfloat16
    assert T.resolve_amp("bf16", torch.device("cpu")) == torch.bfloat16
    assert T.resolve_amp("auto", torch.device("cpu")) is None
    with pytest.raises(ValueError):
        T.resolve_amp("fp16", torch.device("cpu"))


def test_cli_train_with_overrides(prepared, tmp_path):
    from mammo_utils.__main__ import main

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"preprocessed": str(prepared / "png"), "folds": str(prepared / "folds.csv"),
                               "model": "resnet10t", "workers": 0, "batch_size": 8}))
    assert main(["train", "--config", str(cfg), "--set", f"run_dir={tmp_path / 'r'}", "--set", "epochs=1",
                 "--set", "max_steps_per_epoch=1", "--set", "loss=focal", "--set", "drop_path_rate=0.0"]) == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["loss"] == "focal" and saved["epochs"] == 1
    assert (tmp_path / "r" / "best.pt").exists()

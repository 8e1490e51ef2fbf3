"""Beyond the pixels: metadata encoders, auxiliary heads, breast-level view fusion, stacking, and the
generator option that gives the table a signal."""
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from mammo_utils.errors import UserError
from mammo_utils.learn import metadata as md
from mammo_utils.learn.models import build_model

TRAIN = pd.DataFrame({"age": [40.0, 60.0, np.nan, 80.0], "implant": [0, 0, 1, 0], "view": ["CC", "MLO", "CC", "MLO"],
                      "machine_id": [49, 48, 49, 29], "site_id": [1, 1, 2, 2], "BIRADS": [1.0, np.nan, 0.0, 2.0],
                      "density": ["A", "B", None, "D"], "biopsy": [0, 1, 0, 1]})
META = "age,implant,view,machine_id,site_id"


def raw_batch(rows: pd.DataFrame, columns) -> dict:
    """What the DataLoader's collation makes of :func:`metadata.raw_values` for these rows."""
    values = [md.raw_values(r, columns) for r in rows.to_dict("records")]
    return {c: torch.tensor([v[c] for v in values], dtype=torch.float64) if c in md.NUMERIC else [v[c] for v in values]
            for c in columns}


def small_model(**kw):
    torch.manual_seed(0)
    return build_model("resnet10t", None, 0.0, **kw).eval()


def test_training_only_columns_are_refused_with_the_reason():
    with pytest.raises(UserError, match="density.*train.csv only.*auxiliary target"):
        md.check_metadata("age,density")
    with pytest.raises(UserError, match="not a test-time column"):
        md.check_metadata("age,colour")
    assert md.check_metadata(" age , view ") == ["age", "view"]
    assert md.parse_aux("BIRADS,density:0.5") == {"BIRADS": 0.2, "density": 0.5}
    with pytest.raises(UserError, match="aux target 'age'"):
        md.parse_aux("age")


def test_encoders_round_trip_through_the_checkpoint(tmp_path):
    from mammo_utils.learn.checkpoint import load_model, save_checkpoint

    spec, aux = md.fit_metadata(TRAIN, META), md.fit_aux(TRAIN, "BIRADS,density")
    assert spec["machine_id"]["values"] == ["29", "48", "49"] and spec["age"]["mean"] == pytest.approx(60.0)
    assert aux["density"]["classes"] == ["A", "B", "D"]
    model = small_model(metadata=spec, aux=aux)
    args = dict(name="resnet10t", drop_rate=0.0, metadata=spec, aux=aux)
    save_checkpoint(tmp_path / "best.pt", model=model.state_dict(), model_args=args, config={})
    loaded, ckpt = load_model(tmp_path / "best.pt", "cpu")
    assert ckpt["model_args"]["metadata"] == spec and set(loaded.aux_heads) == {"BIRADS", "density"}
    # a missing age, a machine never seen in training and an unknown view all have their slot
    test = pd.DataFrame({"age": [np.nan, 70.0], "implant": [0, 1], "view": ["CC", "AT"], "machine_id": [190, 49],
                         "site_id": [1, 2]})
    x = torch.rand(2, 1, 64, 32)
    with torch.no_grad():
        a, b = model(x, raw_batch(test, list(spec))), loaded.eval()(x, raw_batch(test, list(spec)))
    assert torch.isfinite(a["cancer"]).all() and torch.equal(a["cancer"], b["cancer"])
    assert a["aux_density"].shape == (2, 3)
    # the metadata changes the prediction (it is read), and its absence is not an error
    with torch.no_grad():
        other = model(x, raw_batch(test.assign(age=[45.0, 45.0], machine_id=[29, 29]), list(spec)))["cancer"]
        none = model(x, None)["cancer"]
    assert not torch.allclose(other, a["cancer"]) and torch.isfinite(none).all()


def test_auxiliary_loss_ignores_missing_targets():
    spec = md.fit_aux(TRAIN, "BIRADS:0.5,density")
    raw = {"BIRADS": ["1", "", "0", "2"], "density": ["", "", "", ""]}
    targets = md.aux_targets(raw, spec, 4, "cpu")
    assert targets["BIRADS"].tolist() == [1, -1, 0, 2] and targets["density"].tolist() == [-1] * 4
    logits = {"BIRADS": torch.randn(4, 3, requires_grad=True), "density": torch.randn(4, 3, requires_grad=True)}
    loss = md.aux_loss(logits, targets, spec)
    known = torch.tensor([0, 2, 3])
    expected = 0.5 * torch.nn.functional.cross_entropy(logits["BIRADS"][known], targets["BIRADS"][known])
    assert torch.isfinite(loss) and loss.item() == pytest.approx(expected.item())
    loss.backward()
    assert logits["BIRADS"].grad[1].abs().sum() == 0 and logits["density"].grad.abs().sum() == 0


@pytest.mark.parametrize("fusion", ["mean", "attention"])
def test_fused_and_per_image_paths_agree(fusion):
    spec = md.fit_metadata(TRAIN, META)
    plain, fused = small_model(metadata=spec), small_model(metadata=spec, fusion=fusion)
    fused.load_state_dict({**plain.state_dict(), **{k: v for k, v in fused.state_dict().items() if "attend" in k}})
    x = torch.rand(3, 1, 64, 32)
    meta = raw_batch(TRAIN.iloc[:3], list(spec))
    with torch.no_grad():
        per_image = plain(x, meta)["cancer"]
        # with fusion off the model is the image model: backbone -> pooled features (+ metadata) -> head
        assert torch.allclose(fused(x, meta)["cancer"], per_image, atol=1e-6)
        # a breast of one view (the other three masked out) is scored as its image alone
        breasts = torch.zeros(3, 4, 1, 64, 32)
        breasts[:, 0] = x
        mask = torch.zeros(3, 4, dtype=torch.bool)
        mask[:, 0] = True
        view_meta = {c: ([meta[c]] + [torch.full((3,), float("nan"), dtype=torch.float64)] * 3) if c == "age"
                     else [meta[c]] + [[""] * 3] * 3 for c in spec}
        one_view = fused(breasts, view_meta, mask)["cancer"]
    assert torch.allclose(one_view, per_image, atol=1e-5)
    with pytest.raises(ValueError, match="fusion mean or attention"):
        plain(breasts, view_meta, mask)


def test_prediction_with_missing_age_unseen_machine_and_one_view(tiny_data, tiny_png, tmp_path):
    """Train one step with metadata, auxiliary heads and fusion; predict a test set with gaps."""
    from mammo_utils.judge.inference import predict
    from mammo_utils.learn.config import TrainConfig
    from mammo_utils.learn.sampling import make_folds
    from mammo_utils.learn.train import train
    from mammo_utils.tables import read_table

    shutil.copytree(tiny_png, tmp_path / "png")
    make_folds(read_table(tiny_data), n_splits=2).to_csv(tmp_path / "folds.csv", index=False)
    cfg = TrainConfig(run_dir=str(tmp_path / "run"), preprocessed=str(tmp_path / "png"), folds=str(tmp_path / "folds.csv"),
                      model="resnet10t", epochs=1, max_steps_per_epoch=1, batch_size=4, workers=2, tracking="none",
                      metadata=META, aux_targets="BIRADS,density,biopsy,invasive", fusion="attention")
    train(cfg, progress=False)
    import json

    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["model_args"]
    assert set(recorded["metadata"]) == set(META.split(",")) and set(recorded["aux"]) == {"BIRADS", "density", "biopsy",
                                                                                          "invasive"}
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data, ignore=shutil.ignore_patterns("train_images", "synthetic_masks"))
    test = pd.read_csv(data / "test.csv")
    test.loc[0, "age"] = np.nan
    test.loc[test.patient_id == test.patient_id.iloc[1], "machine_id"] = 999  # a machine never seen
    lone = test.prediction_id.iloc[-1]
    test = test.drop(test.index[test.prediction_id == lone][1:])  # that breast keeps one view
    test.to_csv(data / "test.csv", index=False)
    sub, report = predict(data, "test", [tmp_path / "run"], out=tmp_path / "submission.csv", jobs=1, binarize=False,
                          progress=False)
    assert set(sub.prediction_id) == set(test.prediction_id) and sub.cancer.between(0, 1).all()
    assert report["failed"] == 0
    test.drop(columns=["age"]).to_csv(data / "test.csv", index=False)  # no age column at all: read as missing
    sub, _ = predict(data, "test", [tmp_path / "run"], jobs=1, binarize=False, progress=False)
    assert sub.cancer.notna().all()


def test_generator_gives_the_table_a_signal_only_when_asked():
    from mammo_utils.synthetic.dataset import PRESETS, plan_dataset

    def table(preset):
        knobs = {k: v for k, v in PRESETS[preset].items()}
        return pd.DataFrame(plan_dataset(600, 10, 0, (64, 64), **knobs)).query("split == 'train'")

    signal, control = table("hard_metadata"), table("hard_control")
    for df, older_more in ((signal, True), (control, False)):
        patients = df.groupby("patient_id").agg(age=("age", "first"), cancer=("cancer", "max"))
        old, young = patients[patients.age >= 65].cancer.mean(), patients[patients.age < 55].cancer.mean()
        assert (old > 2 * young) == older_more, (old, young)
    cancer = signal[signal.cancer == 1]
    assert (cancer.BIRADS == 0).mean() > 0.85 and signal.density.notna().all()
    looks = signal.groupby("machine_id").look.first()
    assert looks.nunique() > 3 and set(control.look) == {(1.0, 1.0)}


def test_stacking_uses_the_metadata_signal_and_is_judged_on_the_holdout():
    from mammo_utils import metrics
    from mammo_utils.judge import stacking

    rng = np.random.default_rng(0)

    def breasts(n, offset):
        age = rng.uniform(40, 85, n)
        cancer = (rng.random(n) < 0.05 + 0.4 * (age > 70)).astype(int)
        pred = np.clip(0.3 + 0.2 * cancer + rng.normal(0, 0.2, n), 0.01, 0.99)  # a weak image model
        return pd.DataFrame({"prediction_id": [f"{offset + i}_L" for i in range(n)],
                             "patient_id": [str(offset + i) for i in range(n)], "cancer": cancer, "pred": pred,
                             "age": age, "machine_id": "49", "site_id": "1", "implant": "0"})

    oof, held = breasts(400, 0), breasts(300, 10_000)
    oof_stacked, held_stacked, threshold = stacking.fit_and_judge(oof, held)
    assert metrics.auc(held.cancer, held_stacked.pred) > metrics.auc(held.cancer, held.pred) + 0.05
    assert 0 < threshold < 1 and len(oof_stacked) == len(oof)


def test_cli_offers_every_synthetic_preset():
    from mammo_utils.cli.common import PRESET_NAMES
    from mammo_utils.synthetic.dataset import PRESETS

    assert set(PRESET_NAMES) == set(PRESETS)


def test_stacking_threshold_comes_from_its_cross_validated_oof_predictions_never_the_holdout(tmp_path):
    """The stacked model is judged on the holdout at a threshold chosen on its own OOF predictions: the
    holdout's labels cannot move it, and it is exactly the OOF choice."""
    from mammo_utils import paths
    from mammo_utils.judge import stacking
    from mammo_utils.judge.evaluate import choose_threshold

    rng = np.random.default_rng(1)

    def images(n, offset):
        age = rng.uniform(40, 85, n)
        cancer = (rng.random(n) < 0.1 + 0.4 * (age > 70)).astype(int)
        pred = np.clip(0.3 + 0.25 * cancer + rng.normal(0, 0.2, n), 0.01, 0.99)
        return pd.DataFrame({"patient_id": [f"p{offset + i}" for i in range(n)], "image_id": [f"i{offset + i}" for i in range(n)],
                             "laterality": "L", "view": "CC", "cancer": cancer, "pred": pred, "age": age,
                             "machine_id": "49", "site_id": "1", "implant": "0"})

    oof, held = images(300, 0), images(200, 10_000)
    oof.to_csv(paths.oof_csv(tmp_path), index=False)
    results = []
    for labels in (held.cancer, 1 - held.cancer):  # the same holdout images with their labels flipped
        held.assign(cancer=labels).to_csv(paths.holdout_predictions_csv(tmp_path), index=False)
        results.append(stacking.run_stacking(tmp_path, "mean", n_boot=50))
    assert results[0]["threshold"] == results[1]["threshold"]
    assert results[0]["auc"] == pytest.approx(1 - results[1]["auc"])  # the holdout labels did reach the figures
    oof_stacked, _, threshold = stacking.fit_and_judge(stacking.breast_rows(oof, "mean"),
                                                       stacking.breast_rows(held, "mean"))
    assert threshold == pytest.approx(choose_threshold(oof_stacked.cancer, oof_stacked.pred, "best"))
    assert results[0]["threshold"] == pytest.approx(threshold)

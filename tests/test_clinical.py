"""Operating points, the patient bootstrap, calibration, subgroups and the model card, on hand-made runs."""
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mammo_utils import paths
from mammo_utils.errors import UserError
from mammo_utils.judge import bootstrap, calibration, screening, subgroups

# Six hand-made patients and fourteen quiet ones (two breasts each), decided at 0.5:
#   p00 cancer L .9 / R .1   exam TP   breasts TP, TN
#   p01 cancer L .8 / R .7   exam TP   breasts TP, FP
#   p02 cancer R .2 / L .6   exam TP   breasts FN, FP   (recalled for the wrong breast: still a detected exam)
#   p03 cancer L .3 / R .1   exam FN   breasts FN, TN
#   p04 L .9 / R .2          exam FP   breasts FP, TN
#   p05 L .1 / R .55         exam FP   breasts TN, FP
#   p06..p19 .1 / .2         exam TN   breasts TN, TN
HAND = [("p00", .9, .1, "L"), ("p01", .8, .7, "L"), ("p02", .6, .2, "R"), ("p03", .3, .1, "L"), ("p04", .9, .2, None),
        ("p05", .1, .55, None)] + [(f"p{i:02d}", .1, .2, None) for i in range(6, 20)]


def hand_breasts() -> pd.DataFrame:
    rows = [{"prediction_id": f"{p}_{side}", "patient_id": p, "cancer": int(side == cancer), "pred": pred}
            for p, left, right, cancer in HAND for side, pred in (("L", left), ("R", right))]
    return pd.DataFrame(rows)


def expected(tp, fn, fp, tn, pi=None):
    """The five figures in exact fractions: plain counts, or reweighted to the prevalence ``pi``."""
    tp, fn, fp, tn = (Fraction(v) for v in (tp, fn, fp, tn))
    sens, spec, n = tp / (tp + fn), tn / (tn + fp), tp + fn + fp + tn
    if pi is None:
        return {"sensitivity": sens, "specificity": spec, "recall_rate": (tp + fp) / n, "cdr_per_1000": 1000 * tp / n,
                "ppv1": tp / (tp + fp)}
    pi = Fraction(pi)
    recall = sens * pi + (1 - spec) * (1 - pi)
    return {"recall_rate": recall, "cdr_per_1000": 1000 * sens * pi, "ppv1": sens * pi / recall}


@pytest.mark.parametrize("level, counts", [("examination", (3, 1, 2, 14)), ("breast", (2, 2, 4, 32))])
def test_operating_point_figures_are_exact_at_both_prevalences(level, counts):
    breasts = hand_breasts()
    table = screening.examinations(breasts) if level == "examination" else breasts
    got = screening.operating_point(table.cancer, table.pred, 0.5, bootstrap.patient_groups(table), 0.0051, n_boot=50)
    tp, fn, fp, _ = counts
    assert (got["true_positives"], got["false_negatives"], got["false_positives"], got["true_negatives"]) == counts
    assert got["n"] == sum(counts) and got["cancers"] == tp + fn and got["recalled"] == tp + fp
    for name, value in expected(*counts).items():
        assert got[name] == pytest.approx(float(value), abs=1e-12), name
    for name, value in expected(*counts, pi=Fraction(51, 10000)).items():
        assert got[f"screening_{name}"] == pytest.approx(float(value), abs=1e-12), name
    if level == "examination":  # written out once by hand: 3/4, 14/16, 5/20, 150 per 1,000, 3/5
        assert (got["sensitivity"], got["specificity"], got["recall_rate"], got["cdr_per_1000"], got["ppv1"]) == \
            pytest.approx((0.75, 0.875, 0.25, 150.0, 0.6))
        assert got["screening_cdr_per_1000"] == pytest.approx(3.825)  # 0.75 * 5.1
        assert got["screening_recall_rate"] == pytest.approx(0.75 * 0.0051 + 0.125 * 0.9949)
    for name in screening.FIGURES:
        lo, hi = got[f"{name}_ci"]
        assert lo <= got[name] <= hi


def test_reweighting_to_the_data_prevalence_gives_back_the_counts():
    got = screening.rates(7, 3, 11, 79, prevalence=10 / 100)
    plain = screening.rates(7, 3, 11, 79)
    for name in screening.FIGURES:
        assert got[name] == pytest.approx(plain[name], abs=1e-12)


def test_thresholds_at_a_specificity_and_a_sensitivity():
    y = np.array([0] * 10 + [1] * 4)
    p = np.array([.0, .1, .2, .3, .4, .5, .6, .7, .8, .9, .35, .65, .85, .95])
    t = screening.threshold_at_specificity(y, p, 0.8)  # 8 of 10 negatives below: t = 0.8
    assert t == 0.8 and ((p[y == 0] < t).mean(), (p[y == 1] >= t).mean()) == (0.8, 0.5)
    assert screening.threshold_at_specificity(y, p, 0.81) == 0.85  # 9 of 10 needed: the next score up
    assert screening.threshold_at_sensitivity(y, p, 0.75) == 0.65 and screening.threshold_at_sensitivity(y, p, 1.0) == 0.35
    assert screening.sensitivity_at_specificity(y, p, 0.8) == 0.5
    assert np.isnan(screening.sensitivity_at_specificity(np.ones(3), [.1, .2, .3]))
    with pytest.raises(UserError, match="cancer-free"):
        screening.threshold_at_specificity(np.ones(3), [.1, .2, .3], 0.9)


def test_operating_points_are_chosen_on_examinations():
    points = screening.choose_points(hand_breasts(), 0.5, user={"strict": 0.85, "spec95": {"specificity": 0.95}})
    assert list(points.point) == ["decision", "bcsc_specificity", "bcsc_sensitivity", "strict", "spec95"]
    exams = screening.examinations(hand_breasts())
    for name, target in (("bcsc_specificity", 0.889), ("spec95", 0.95)):
        t = points.set_index("point").threshold[name]
        assert (exams.pred[exams.cancer == 0] < t).mean() >= target
        lower = exams.pred[exams.pred < t].max()  # the next score down no longer reaches the target
        assert (exams.pred[exams.cancer == 0] < lower).mean() < target
    with pytest.raises(UserError, match="operating point 'bad'"):
        screening.choose_points(hand_breasts(), 0.5, user={"bad": "high"})


def correlated_breasts(rng, patients: int, p: float = 0.3, icc: float = 0.8):
    """Patients with two breasts whose outcomes share the patient's own rate (Beta, mean ``p``,
    intra-class correlation ``icc``): a proportion over breasts with a known truth ``p``."""
    a, b = p * (1 / icc - 1), (1 - p) * (1 / icc - 1)
    rate = rng.beta(a, b, patients)
    return (rng.random((patients, 2)) < rate[:, None]).ravel().astype(float), np.repeat(np.arange(patients), 2)


def coverage(replications: int, patients: int, resamples: int, seed: int = 0) -> dict:
    """Share of 95 % intervals that hold the true proportion, resampling breasts or patients."""
    rng = np.random.default_rng(seed)
    hits = {"breasts": 0, "patients": 0}
    for r in range(replications):
        x, groups = correlated_breasts(rng, patients)
        ones = np.ones_like(x)
        for name, g in (("breasts", None), ("patients", groups)):
            lo, hi = bootstrap.ratio_interval(x, ones, bootstrap.resample_weights(len(x), resamples, r, g))
            hits[name] += lo <= 0.3 <= hi
    return {k: v / replications for k, v in hits.items()}


def test_cluster_bootstrap_covers_where_the_breast_bootstrap_does_not():
    """Two correlated breasts per patient: resampling breasts treats them as independent and its 95 %
    intervals are too narrow; resampling patients covers near 95 % (benchmarks/bootstrap_coverage.py
    runs the fuller simulation)."""
    got = coverage(replications=300, patients=80, resamples=300)
    assert 0.90 <= got["patients"] <= 0.99, got
    assert got["breasts"] <= got["patients"] - 0.06, got


def test_patient_resamples_keep_a_patients_breasts_together():
    groups = np.array(["b", "a", "b", "c", "a", "c", "d"])
    idx = bootstrap.resamples(len(groups), 20, 3, groups)
    weights = bootstrap.resample_weights(len(groups), 20, 3, groups)
    for rows, w in zip(idx, weights):
        counts = pd.Series(groups[rows]).value_counts()
        assert all(counts[g] == 2 * w[list(groups).index(g)] for g in counts.index if g != "d")  # both breasts
        assert np.array_equal(np.bincount(rows, minlength=len(groups)), w)  # one draw, two views of it
    assert bootstrap.patient_groups(pd.DataFrame(index=pd.Index(["10_L", "10_R", "a_b_L"], name="prediction_id"))
                                    ).tolist() == ["10", "10", "a_b"]
    # the interval of a statistic now resamples patients: with all breasts of a patient alike, its
    # interval is wider than the breast bootstrap's
    y, x = np.repeat([0, 1] * 20, 2), np.repeat(np.linspace(0, 1, 40), 2)
    by_breast = bootstrap.interval(lambda yy, pp: pp.mean(), y, x, n=300)
    by_patient = bootstrap.interval(lambda yy, pp: pp.mean(), y, x, n=300, groups=np.repeat(np.arange(40), 2))
    assert by_patient[1] - by_patient[0] > 1.2 * (by_breast[1] - by_breast[0])


def test_calibration_of_calibrated_and_overconfident_probabilities():
    rng = np.random.default_rng(0)
    p = rng.beta(1, 6, 20000)
    y = (rng.random(len(p)) < p).astype(int)
    slope, intercept = calibration.slope_intercept(y, p)
    assert abs(slope - 1) < 0.08 and abs(intercept) < 0.08
    assert calibration.ece(y, p) < 0.01 and calibration.brier(y, p) == pytest.approx(np.mean((p - y) ** 2))
    table = calibration.reliability_table(y, p, bins=10)
    full = table[table.n >= 100]  # the sparse top bins wander by chance
    assert table.n.sum() == len(p) and len(full) >= 5 and (full.observed - full.mean_predicted).abs().max() < 0.03
    # overconfident: logits doubled -> slope about 1/2, a large ECE; Platt fitted on other breasts repairs it
    sharp = 1 / (1 + np.exp(-2 * calibration.logit(p)))
    assert calibration.slope_intercept(y, sharp)[0] == pytest.approx(0.5, abs=0.05) and calibration.ece(y, sharp) > 0.03
    oof = pd.DataFrame({"patient_id": np.arange(10000), "cancer": y[:10000], "pred": sharp[:10000]})
    held = pd.DataFrame({"patient_id": np.arange(10000), "cancer": y[10000:], "pred": sharp[10000:]})
    judged = calibration.judge(oof, held, "platt", n_boot=30)
    assert judged["judged_on"] == "holdout" and judged["raw"]["slope"] < 0.6
    assert abs(judged["platt"]["slope"] - 1) < 0.1 and judged["platt"]["ece"] < judged["raw"]["ece"] / 3
    lo, hi = judged["raw"]["slope_ci"]
    assert lo < judged["raw"]["slope"] < hi < 1
    # the map is fitted out of fold only: holdout logits tripled, OOF logits doubled -> Platt halves the
    # logits, and the holdout keeps a slope of 2/3 (fitted on the holdout itself it would be 1)
    sharper = held.assign(pred=1 / (1 + np.exp(-3 * calibration.logit(p[10000:]))))
    assert calibration.judge(oof, sharper, "platt", n_boot=10)["platt"]["slope"] == pytest.approx(2 / 3, abs=0.06)
    assert calibration.judge(oof, held, "isotonic", n_boot=10)["isotonic"]["ece"] < judged["raw"]["ece"] / 3
    assert judged["platt"]["fitted_on"] == "out of fold"
    in_sample = calibration.judge(oof, held.iloc[:0], "isotonic", n_boot=10)  # no holdout: judged where fitted
    assert in_sample["judged_on"] == "out of fold" and "optimistic" in in_sample["isotonic"]["fitted_on"]
    assert np.isnan(calibration.slope_intercept(np.zeros(5), np.full(5, 0.2))[0])
    assert np.isnan(calibration.slope_intercept([0, 0, 1, 1], [0.45, 0.47, 0.49, 0.51])[0])  # separated: no estimate
    with pytest.raises(UserError, match="recalibration must be one of"):
        calibration.fit_recalibration(y, p, "beta")


def test_calibration_intercept_is_calibration_in_the_large():
    """The intercept is fitted with the slope fixed at 1 (logit(p) as an offset, Van Calster et al. 2019):
    it moves the mean prediction onto the observed rate. Overconfident probabilities (logits doubled)
    have a joint-fit intercept near 0, yet their mean is far from the observed rate."""
    rng = np.random.default_rng(1)
    p = rng.beta(1, 6, 20000)
    y = (rng.random(len(p)) < p).astype(int)
    sharp = 1 / (1 + np.exp(-2 * calibration.logit(p)))
    assert abs(sharp.mean() - y.mean()) > 0.02
    intercept = calibration.slope_intercept(y, sharp)[1]
    moved = 1 / (1 + np.exp(-(calibration.logit(sharp) + intercept)))
    assert moved.mean() == pytest.approx(y.mean(), abs=1e-6) and intercept > 0.3  # predictions too low on average
    assert np.isnan(calibration.slope_intercept(np.ones(4), np.full(4, 0.3))[1])


def subgroup_breasts(rng) -> pd.DataFrame:
    """Site 1: 4 of 5 cancers found; site 2: 1 of 5; site 3: no cancer (30 cancers in each of sites 1, 2)."""
    rows = []
    for site, patients in ((1, 150), (2, 150), (3, 30)):
        for k in range(patients):
            for side in "LR":
                cancer = int(site != 3 and side == "L" and k % 5 == 0)
                found = (k // 5) % 5 != 0 if site == 1 else (k // 5) % 5 == 0
                false_alarm = site == 2 and side == "R" and k % 10 == 1  # overall specificity below 1
                pred = rng.uniform(0.6, 1.0) if (cancer and found) or false_alarm else rng.uniform(0.0, 0.55)
                rows.append({"prediction_id": f"{site}-{k}_{side}", "patient_id": f"{site}-{k}", "cancer": cancer,
                             "pred": pred, "site_id": site, "age": [45, 55, np.nan, 72][k % 4]})
    return pd.DataFrame(rows)


def test_subgroups_say_na_where_undefined_and_flag_where_they_differ():
    breasts = subgroup_breasts(np.random.default_rng(0))
    breasts["age_band"] = subgroups.age_band(breasts.age)
    breasts["source"] = "rsna"  # one value: the subgroup is the whole set, never flagged against itself
    table = subgroups.subgroup_table(breasts, 0.58, by=("site_id", "age_band", "density", "source"), n_boot=200)
    overall = table.iloc[0]
    assert (overall.subgroup, overall.breasts, overall.cancer_breasts, overall.patients) == ("overall", 660, 60, 330)
    site = table[table.subgroup == "site_id"].set_index("value")
    assert site.loc["1", "sensitivity"] == 0.8 and site.loc["2", "sensitivity"] == 0.2 and overall.sensitivity == 0.5
    assert "sensitivity above overall" in site.loc["1", "flag"] and "sensitivity below overall" in site.loc["2", "flag"]
    assert np.isnan(site.loc["3", "auc"]) and np.isnan(site.loc["3", "sensitivity"]) and site.loc["3", "specificity"] == 1
    shown = subgroups.display(table).set_index(["subgroup", "value"])
    assert shown.loc[("site_id", "3"), "auc"] == "n/a" and shown.loc[("site_id", "3"), "sensitivity"] == "n/a"
    two = breasts[breasts.site_id == 2]  # its intervals resample the site's patients, both breasts together
    weights = bootstrap.resample_weights(len(two), 200, 0, two.patient_id.to_numpy())
    auc_ci = bootstrap.percentile_interval(bootstrap.weighted_auc(two.cancer, two.pred, weights))
    assert site.loc["2", "auc_ci"] == list(auc_ci) and auc_ci[0] < site.loc["2", "auc"] < auc_ci[1]
    assert shown.loc[("site_id", "2"), "sensitivity"].startswith("0.200 [")
    assert overall.specificity < 1 and site.loc["3", "specificity_ci"] == [1.0, 1.0]
    assert site.loc["3", "flag"] == ""  # a degenerate interval excludes the overall figure but says nothing
    assert set(table[table.subgroup == "age_band"].value) == {"<50", "50-59", ">=70", "unknown"}
    assert table[table.subgroup == "source"].flag.tolist() == [""]
    # two women: the upper percentile lands one ulp below the overall AUC of 2/3; the same set is not flagged
    tiny = pd.DataFrame({"patient_id": ["a", "a", "b", "b"], "cancer": [0, 0, 1, 0], "source": "rsna",
                         "pred": [0.4798737019300461, 0.4797474940617879, 0.4803582429885864, 0.4805324822664261]})
    assert subgroups.subgroup_table(tiny, 0.4755, by=("source",), n_boot=50).flag.tolist() == ["", ""]
    assert "density" not in set(table.subgroup) and subgroups.absent(breasts, ("site_id", "density")) == ["density"]
    assert not table[table.subgroup == "age_band"].flag.str.contains("auc").any()  # ages mixed evenly: no AUC flag


def write_tiny_run(root, patients: int = 90, synthetic: bool = True, seed: int = 0):
    """A run folder made by hand, no training: a data folder (train.csv with density), a preprocessing
    description, fold 0's config and decision rule, a locked holdout, and the OOF and holdout image
    predictions (four views a patient; scores that rise with cancer and share a patient's level)."""
    rng = np.random.default_rng(seed)
    data, run, pre = root / "data", root / "run", root / "run" / "preprocessed" / "train_64x32"
    for folder in (data, pre, paths.train_dir(run, 0)):
        folder.mkdir(parents=True)
    rows = []
    for k in range(patients):
        level, cancer_side = rng.normal(0, 0.7), ("L" if k % 7 == 0 else "R" if k % 7 == 3 else None)
        for side in "LR":
            cancer = int(side == cancer_side)
            breast = level + rng.normal(0, 0.6) + 2.2 * cancer
            for view in ("CC", "MLO"):
                rows.append({"site_id": 1 + k % 2, "patient_id": f"P{k:03d}", "image_id": f"{k}{side}{view}",
                             "laterality": side, "view": view, "age": [44.0, 56.0, 63.0, 75.0, np.nan][k % 5],
                             "cancer": cancer, "implant": int(k % 9 == 0), "density": "ABCD"[k % 4],
                             "machine_id": [49, 93, 210][k % 3],
                             "pred": float(1 / (1 + np.exp(-(breast + rng.normal(0, 0.3) - 2.0))))})
    images = pd.DataFrame(rows)
    images.drop(columns="pred").to_csv(data / "train.csv", index=False)
    if synthetic:
        images[["patient_id", "image_id", "laterality", "cancer"]].assign(split="train").to_csv(
            data / "synthetic_truth.csv", index=False)
    held = images.patient_id.isin([f"P{k:03d}" for k in range(0, patients, 3)])
    oof = images[~held].assign(fold=lambda d: d.patient_id.str[1:].astype(int) % 3)
    oof.to_csv(paths.oof_csv(run), index=False)
    holdout = images[held].drop(columns=["density"]).assign(folds=3)  # density is train-only: not in holdout.csv
    holdout.to_csv(paths.holdout_predictions_csv(run), index=False)
    paths.holdout_json(run).write_text(json.dumps({"fingerprint": "0123456789abcdef", "fraction": 0.33, "seed": 0,
                                                   "how": "every third patient", "patients": int(held.sum() // 4)}))
    (pre / "preprocess.json").write_text(json.dumps({"config": {"size": "64x32", "crop": True, "voi": "auto"},
                                                     "data": str(data), "split": "train"}))
    config = {"preprocessed": str(pre), "model": "resnet10t", "epochs": 2, "lr": 0.001, "batch_size": 8,
              "aggregate": "mean", "sampler": "balanced", "seed": 0}
    (paths.train_dir(run, 0) / "config.json").write_text(json.dumps(config))
    (paths.train_dir(run, 0) / "threshold.json").write_text(json.dumps({"threshold": 0.5, "aggregate": "mean"}))
    paths.evaluation_json(run).write_text(json.dumps({"threshold": 0.5, "aggregate": "mean"}))  # notebook 05's, first
    return data, run


SECTIONS = ("# Model card", "## 1. Intended use", "## 2. Data", "## 3. Preprocessing, model and training",
            "## 4. Estimates", "## 5. Operating points", "## 6. Calibration", "## 7. Subgroups", "## 8. Limitations",
            "## 9. TRIPOD+AI items")


def test_model_card_of_a_hand_made_run(tmp_path):
    from mammo_utils.workflow.model_card import SYNTHETIC_WARNING, write_model_card

    _, run = write_tiny_run(tmp_path)
    from mammo_utils.judge.clinical import judge_run, record

    judged = judge_run(run, n_boot=100, recalibration="platt", operating_points={"high": 0.8})
    card_path = write_model_card(run, judged)
    card = card_path.read_text()
    assert card_path == run / "model_card.md"
    evaluation = json.loads(record(run, judged).read_text())  # the points beside notebook 05's estimates
    assert evaluation["operating_points"]["figures"] == json.loads((run / "model_card.json").read_text())[
        "operating_points"] and evaluation["operating_points"]["screening_prevalence"] == 0.0051
    positions = [card.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    assert SYNTHETIC_WARNING in card and "0123456789abcdef" in card and "resnet10t" in card and "64x32" in card
    assert "86.9" in card and "88.9" in card and "11.6" in card and "5.1" in card and "4.4" in card
    assert "platt (fitted out of fold)" in card and "| 23a |" in card and "| 14 |" in card
    assert "density" in card and "n/a" not in card.split("## 7.")[0].split("## 2.")[1]  # density joined from train.csv
    saved = json.loads((run / "model_card.json").read_text())
    assert [p["point"] for p in saved["points"]] == ["decision", "bcsc_specificity", "bcsc_sensitivity", "pf1", "high"]
    assert saved["settings"]["decision_threshold"] == 0.5 and saved["synthetic"] is True
    # the holdout's figures recomputed from holdout_predictions.csv at the thresholds the card reports
    images = pd.read_csv(run / "holdout_predictions.csv")
    breasts = images.groupby(["patient_id", "laterality"]).agg(cancer=("cancer", "max"), pred=("pred", "mean"))
    exams = breasts.groupby(level=0).max()
    for row in saved["operating_points"]:
        if row["estimate"] != "holdout":
            continue
        table = exams if row["level"] == "examination" else breasts
        called, y = table.pred >= row["threshold"], table.cancer == 1
        assert (row["n"], row["true_positives"], row["false_positives"]) == (len(table), (called & y).sum(),
                                                                             (called & ~y).sum())
        assert row["sensitivity"] == pytest.approx((called & y).sum() / y.sum())
        assert row["specificity"] == pytest.approx((~called & ~y).sum() / (~y).sum())
        assert row["ppv1"] == pytest.approx((called & y).sum() / called.sum()) if called.any() else row["ppv1"] is None
        assert row["cdr_per_1000"] == pytest.approx(1000 * (called & y).sum() / len(table))
        sens, spec, pi = row["sensitivity"], row["specificity"], 0.0051
        assert row["screening_recall_rate"] == pytest.approx(sens * pi + (1 - spec) * (1 - pi))
    oof_exams = pd.read_csv(run / "oof_predictions.csv").groupby(["patient_id", "laterality"]).agg(
        cancer=("cancer", "max"), pred=("pred", "mean")).groupby(level=0).max()
    t = saved["points"][1]["threshold"]  # chosen out of fold: the lowest threshold with specificity >= 88.9 % there
    assert t == screening.threshold_at_specificity(oof_exams.cancer, oof_exams.pred, 0.889)
    assert saved["points"][2]["threshold"] == screening.threshold_at_sensitivity(oof_exams.cancer, oof_exams.pred, 0.869)
    by_subgroup = {r["subgroup"] for r in saved["subgroups"]}
    assert {"age_band", "density", "site_id", "machine_id", "source", "implant"} <= by_subgroup  # density from train.csv
    # a decision that is not the pF1-best one: the pF1 point is shown too, chosen on the OOF breasts
    from mammo_utils import metrics

    oof_breasts = pd.read_csv(run / "oof_predictions.csv").groupby(["patient_id", "laterality"]).agg(
        cancer=("cancer", "max"), pred=("pred", "mean"))
    points = judge_run(run, n_boot=5, threshold=0.9)["points"].set_index("point")
    assert points.threshold["decision"] == 0.9
    assert points.threshold["pf1"] == metrics.best_threshold(oof_breasts.cancer, oof_breasts.pred)[0]
    # real data: no warning
    _, run2 = write_tiny_run(tmp_path / "real", synthetic=False)
    card2 = write_model_card(run2, n_boot=20).read_text()
    assert SYNTHETIC_WARNING not in card2 and "synthetic" not in card2.split("## 8. Limitations")[1].split("## 9")[0]


def test_vectorised_auc_and_average_precision_equal_sklearn_on_every_resample():
    from mammo_utils import metrics

    rng = np.random.default_rng(1)
    y = rng.random(300) < 0.2
    s = np.round(rng.random(300) + 0.3 * y, 2)  # ties within and across classes
    idx = bootstrap.resamples(300, 60, 4, np.repeat(np.arange(150), 2))
    for fn in (metrics.auc, metrics.pr_auc):
        slow = np.array([fn(y[i], s[i]) for i in idx])
        np.testing.assert_allclose(bootstrap.per_resample(fn, y, s, idx), slow, atol=1e-12)
        wrapped = bootstrap.interval(lambda a, b, f=fn: f(a, b), y, s, indices=idx)  # not the fast path
        assert bootstrap.interval(fn, y, s, indices=idx) == pytest.approx(wrapped, abs=1e-12)
    assert np.isnan(bootstrap.weighted_auc(np.ones(4), [.1, .2, .3, .4], np.ones((1, 4))))[0]


def fake_run(sweep, name, combination, images: pd.DataFrame):
    """A finished sweep run as compare reads it: its holdout image predictions at the OOF threshold 0.5."""
    run = sweep / name
    paths.train_dir(run, 0).mkdir(parents=True)
    (run / "sweep_params.json").write_text(json.dumps({"combination": combination, "seed": 0, "params": {}}))
    (run / "summary.json").write_text(json.dumps({"val_auc": 0.7, "val_pf1": 0.3, "val_pr_auc": 0.4}))
    (paths.train_dir(run, 0) / "threshold.json").write_text(json.dumps({"threshold": 0.5, "aggregate": "mean"}))
    paths.evaluation_json(run).write_text(json.dumps({"threshold": 0.5, "aggregate": "mean"}))
    paths.holdout_json(run).write_text(json.dumps({"fingerprint": "abc"}))
    images.to_csv(paths.holdout_predictions_csv(run), index=False)


def test_compare_matches_breasts_on_prediction_id_not_row_position(tmp_path):
    """Recipe b lists its holdout images in another order than a: the paired figures must be those of
    the same rows written in a's order (pairing by position would pair one woman's breast with another's)."""
    from mammo_utils.judge import compare

    rng = np.random.default_rng(0)
    rows = [{"patient_id": f"P{k}", "laterality": side, "image_id": f"{k}{side}{v}", "cancer": int(k % 5 == 0 and side == "L")}
            for k in range(40) for side in "LR" for v in (0, 1)]
    images = pd.DataFrame(rows)
    a = images.assign(pred=np.clip(0.3 * images.cancer + rng.random(len(images)) * 0.7, 0, 1))
    b = images.assign(pred=np.clip(0.5 * images.cancer + rng.random(len(images)) * 0.5, 0, 1))
    tables = {}
    for case, b_rows in (("same order", b), ("shuffled", b.sample(frac=1, random_state=1))):
        sweep = tmp_path / case.replace(" ", "_")
        fake_run(sweep, "a_seed0", "a", a)
        fake_run(sweep, "b_seed0", "b", b_rows)
        runs = compare.collect(sweep)
        tables[case] = (compare.combination_table(runs, sweep, None, n_boot=100).set_index("combination"),
                        compare.paired_table(runs, sweep, None, "a", "sens_at_spec", n_boot=100),
                        compare.paired_table(runs, sweep, None, "a", "auc", n_boot=100))
    for same, shuffled in zip(tables["same order"], tables["shuffled"]):
        pd.testing.assert_frame_equal(same, shuffled)
    table, at_spec, _ = tables["shuffled"]
    breasts = metrics_breasts(b)
    assert table.loc["b", "holdout_sens_at_spec_seed_mean"] == screening.sensitivity_at_specificity(
        breasts.cancer, breasts.pred, 0.889)
    assert at_spec["diff"].iloc[0] == pytest.approx(table.loc["b", "holdout_sens_at_spec_seed_mean"]
                                                    - table.loc["a", "holdout_sens_at_spec_seed_mean"])
    assert at_spec.metric.tolist() == ["holdout_sens_at_spec_seed_mean"]
    # paired over patients: the same resamples of women, both breasts of each together
    base = metrics_breasts(a).set_index("prediction_id")
    other = breasts.set_index("prediction_id").loc[base.index]
    expect = bootstrap.paired_difference(screening.sensitivity_at_specificity, base.cancer, [other.pred.to_numpy()],
                                         [base.pred.to_numpy()], 100, 0, groups=bootstrap.patient_groups(base))
    assert (at_spec.ci_low.iloc[0], at_spec.ci_high.iloc[0]) == (expect["ci_low"], expect["ci_high"])
    fake_run(tmp_path / "gap", "a_seed0", "a", a)
    fake_run(tmp_path / "gap", "b_seed0", "b", b[b.patient_id != "P3"])
    with pytest.raises(UserError, match="runs predicted different breasts .*P3_L, P3_R"):
        compare.paired_table(compare.collect(tmp_path / "gap"), tmp_path / "gap", None, "a", "auc", n_boot=10)


def metrics_breasts(images):
    from mammo_utils import metrics

    return metrics.aggregate_breasts(images)


def test_report_shows_the_model_card_and_mlflow_gets_it(tmp_path):
    """report.html opens with the card, its tables rendered; the pipeline's tracking run receives it."""
    from mammo_utils.workflow.model_card import write_model_card
    from mammo_utils.workflow.pipeline import record_run
    from mammo_utils.workflow.report import write_report

    _, run = write_tiny_run(tmp_path)
    write_model_card(run, n_boot=20)
    html = write_report(run, ["05_evaluate"]).read_text()  # no executed notebook yet: the card alone
    assert "Model card: run" in html and "<td>23a</td>" in html and "Operating points" in html

    class Recorder:
        active, artifacts = True, []

        def params(self, *a, **k): pass

        def metrics(self, *a, **k): pass

        def artifact(self, path, folder=None):
            self.artifacts.append(Path(path).name)

        def end(self, status="FINISHED"): pass

    tracker = Recorder()
    record_run(tracker, run, {}, {})
    assert {"model_card.md", "model_card.json"} <= set(tracker.artifacts)


def test_bad_choices_stop_with_one_line(tmp_path):
    from mammo_utils.judge.clinical import judge_run

    _, run = write_tiny_run(tmp_path, patients=30)
    for options, message in (({"screening_prevalence": 5.1}, r"screening_prevalence must be in \(0, 1\)"),
                             ({"operating_points": {"x": "high"}}, "operating point 'x'"),
                             ({"recalibration": "beta"}, "recalibration must be one of"),
                             ({"subgroup_point": "nope"}, "subgroup_point 'nope' is not an operating point"),
                             ({"operating_points": {"decision": 0.3}}, "operating point 'decision': a point of that"),
                             ({"operating_points": {"pf1": 0.01}}, "operating point 'pf1': the run's own"),
                             ({"operating_points": {"x": {"specificity": 90}}}, r"a specificity to reach must be a share"),
                             ({"operating_points": {"x": {"sensitivity": 95}}}, r"a sensitivity to reach must be a share")):
        with pytest.raises(UserError, match=message):
            judge_run(run, n_boot=5, **options)
    (run / "oof_predictions.csv").unlink()
    with pytest.raises(UserError, match="oof_predictions.csv not found"):
        judge_run(run, n_boot=5)


def test_model_card_without_a_holdout_says_every_figure_is_out_of_fold(tmp_path):
    from mammo_utils.workflow.model_card import write_model_card

    _, run = write_tiny_run(tmp_path, patients=30)
    paths.holdout_predictions_csv(run).unlink()
    paths.holdout_json(run).unlink()
    limitations = write_model_card(run, n_boot=5).read_text().split("## 8. Limitations")[1].split("## 9.")[0]
    assert "No locked holdout: every figure is out of fold" in limitations and "The holdout holds" not in limitations


def test_model_card_says_when_the_data_folder_is_not_found(tmp_path):
    """The synthetic check reads the data folder: a card judged where that folder is not found says so,
    rather than quietly dropping the synthetic-data warning."""
    from mammo_utils.workflow.model_card import SYNTHETIC_WARNING, write_model_card

    data, run = write_tiny_run(tmp_path, patients=30)
    data.rename(tmp_path / "moved")
    card = write_model_card(run, n_boot=5).read_text()
    assert SYNTHETIC_WARNING not in card and f"The data folder (`{data}`) was not found from here" in card


def test_roc_figure_shows_every_operating_point():
    """Four points of the run and five of the user's: each is drawn (markers cycle), none left off the figure."""
    import matplotlib

    matplotlib.use("Agg")
    from mammo_utils.explore import clinical_plots

    breasts = hand_breasts()
    user = {f"u{k}": 0.1 * k for k in range(1, 6)}
    points = screening.choose_points(breasts, 0.5, user=user)
    table = screening.evaluate_points(points, {"holdout": breasts}, n_boot=5)
    exams = screening.examinations(breasts)
    fig = clinical_plots.roc_operating_points(exams.cancer, exams.pred, table)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert [lab.split(" (t =")[0] for lab in labels if " (t =" in lab] == list(points.point) and len(points) == 8


def test_a_holdout_breast_without_a_readable_image_is_kept_as_the_run_keeps_it(tmp_path):
    """Its images failed (no probability): the card judges it at the data's prevalence, as the run's own
    holdout estimate does (estimates.with_unreadable), never leaving it out of the operating points."""
    from mammo_utils.judge.clinical import judge_run

    _, run = write_tiny_run(tmp_path, patients=30)
    held = pd.read_csv(paths.holdout_predictions_csv(run), dtype={"patient_id": str})
    held.loc[(held.patient_id == "P000") & (held.laterality == "L"), "pred"] = np.nan  # P000's cancer breast
    held.to_csv(paths.holdout_predictions_csv(run), index=False)
    judged = judge_run(run, n_boot=5)
    breasts = judged["breasts"]["holdout"].set_index("prediction_id")
    assert len(breasts) == held.groupby(["patient_id", "laterality"]).ngroups == judged["data"]["holdout"]["breasts"]
    assert breasts.pred["P000_L"] == pytest.approx(judged["breasts"]["out of fold"].cancer.mean())
    point = judged["operating"].query("estimate == 'holdout' and level == 'breast' and point == 'decision'").iloc[0]
    assert point.n == len(breasts) and point.cancers == int(breasts.cancer.sum())

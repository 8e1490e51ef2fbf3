"""``<run>/model_card.md``: the run described for a journal, a screening programme and the next user.

Written from the run folder alone (:func:`mammo_utils.judge.clinical.judge_run`): intended use; the data
(sources, counts, prevalence, the holdout's fingerprint); preprocessing, model and training (each fold's
config.json and the preprocessing's preprocess.json); every estimate with its 95 % interval over
patients; the operating points beside the BCSC radiologists (Lehman et al., Radiology 2017);
calibration; subgroups; limitations, with a plain warning when the data is synthetic; and the
TRIPOD+AI (Collins et al., BMJ 2024) items it answers and where. ``model_card.json`` beside it holds the
same figures as data.
"""
from __future__ import annotations

import json
from pathlib import Path

from .. import paths
from ..judge import screening
from ..judge.estimates import clean
from ..judge.subgroups import display, fmt

TRAINING_KEYS = ("model", "pretrained", "image_size", "epochs", "batch_size", "accum_steps", "lr", "weight_decay",
                 "schedule", "loss", "pos_weight", "sampler", "pos_fraction", "ema_decay", "select_metric", "aggregate",
                 "metadata", "aux_targets", "fusion", "amp", "seed")
SYNTHETIC_WARNING = ("**Warning: synthetic data.** This run was trained and judged on images made by the "
                     "workbook's generator (its data folder has `synthetic_truth.csv`). Its figures say whether "
                     "the code works, nothing about how a model would perform on mammograms of real women. Do not "
                     "quote them as clinical performance.")
# (item, topic, section of this card) for each TRIPOD+AI item the card answers
TRIPOD_AI = (("3b", "Target population, intended use and users", "1. Intended use"),
             ("5a", "Sources of data", "2. Data"),
             ("7", "Data preparation (preprocessing)", "3. Preprocessing, model and training"),
             ("8a", "Outcome definition (cancer breast, cancer examination)", "1. Intended use"),
             ("12a", "How the data were used: folds, out-of-fold, locked holdout", "2. Data; 4. Estimates"),
             ("12c", "Model type, building steps, hyperparameters", "3. Preprocessing, model and training"),
             ("12d", "Heterogeneity across clusters (sites, machines, sources)", "7. Subgroups"),
             ("12e", "Performance measures (discrimination, calibration, clinical) and why", "4, 5, 6"),
             ("12f", "Model updating: recalibration fitted out of fold", "6. Calibration"),
             ("13", "Class imbalance: prevalence, and its adjustment to a screening population", "2. Data; 5"),
             ("14", "Fairness: performance per age band, density, site, machine, source, implant", "7. Subgroups"),
             ("15", "Model output and decision thresholds, how they were chosen", "5. Operating points"),
             ("20b", "Characteristics of the data: counts and prevalence per set and source", "2. Data"),
             ("21", "Participants and outcome events in each analysis", "2. Data; 5; 7"),
             ("23a", "Performance with confidence intervals, including subgroups", "4, 5, 6, 7"),
             ("23b", "Heterogeneity of performance across clusters", "7. Subgroups"),
             ("24", "Results of model updating (recalibrated calibration)", "6. Calibration"),
             ("26", "Limitations", "8. Limitations"))


def _pct(v, ci=None) -> str:
    return fmt(None if v is None else 100 * v, None if ci is None else [100 * c for c in ci], 1)


def _table(rows: list[dict]) -> str:
    """A Markdown table of ``rows`` (dicts with the same keys)."""
    if not rows:
        return "_none_\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _training(run: Path) -> tuple[dict, dict, list[int]]:
    """(training settings of fold 0's config, the preprocessing settings, the folds trained)."""
    configs = sorted(paths.train_root(run).glob(f"*/{paths.CONFIG}"))
    folds = sorted(int(c.parent.name[4:]) for c in configs if c.parent.name[4:].isdigit())
    cfg = json.loads(configs[0].read_text()) if configs else {}
    pre_file = Path(cfg.get("preprocessed", "")) / paths.PREPROCESS_CONFIG if cfg.get("preprocessed") else None
    pre = json.loads(pre_file.read_text()).get("config", {}) if pre_file and pre_file.exists() else {}
    return {k: cfg[k] for k in TRAINING_KEYS if k in cfg}, pre, folds


def _intended_use(r: dict) -> str:
    s = r["settings"]
    return ("## 1. Intended use\n\nResearch on breast-cancer detection in screening mammograms (RSNA layout). The "
            "model reads each image of a woman's screening examination and gives a probability of cancer per "
            f"image; a breast's score is the {s['aggregate']} of its images, and an examination's score is the larger "
            "of its two breasts' (the examination is recalled when either breast is). A cancer breast is one with "
            "a cancer label in the data; a cancer examination is one with a cancer breast. Intended users: "
            "researchers comparing recipes and judging a model before any prospective study. **Not a medical "
            "device; not for decisions about a patient.**\n")


def _data(r: dict) -> str:
    rows = [{"set": k, "images": d.get("images", 0), "breasts": d.get("breasts", 0),
             "examinations (patients)": d.get("patients", 0), "cancer breasts": d.get("cancer_breasts", 0),
             "cancer examinations": d.get("cancer_examinations", 0),
             "breast prevalence": _pct(d.get("breast_prevalence")) + " %" if d.get("breasts") else "n/a",
             "examination prevalence": _pct(d.get("examination_prevalence")) + " %" if d.get("breasts") else "n/a",
             "sources (breasts)": ", ".join(f"{s}: {n}" for s, n in d.get("sources", {}).items()) or "n/a"}
            for k, d in r["data"].items()]
    h = r["holdout"]
    holdout = (f"Locked holdout: fingerprint `{h.get('fingerprint')}`, {h.get('patients')} patients, drawn as "
               f"{h.get('how')}. No fold, epoch choice or threshold ever saw these patients.\n" if h else
               "No locked holdout (holdout_fraction 0): every figure below is out of fold.\n")
    return (f"## 2. Data\n\nData folder: `{r['data_dir']}`. Out of fold: every trained fold's validation images, "
            f"pooled; the operating points are chosen there.\n\n{_table(rows)}\n{holdout}")


def _training_section(run: Path) -> str:
    train, pre, folds = _training(run)
    text = "## 3. Preprocessing, model and training\n\n"
    text += ("Preprocessing (`preprocess.json`): " + ", ".join(f"{k} = `{v}`" for k, v in pre.items()) + ".\n\n"
             if pre else "Preprocessing: no `preprocess.json` found beside the run's configs.\n\n")
    text += (f"Model and training (fold config, {len(folds)} fold(s) trained: {folds}): "
             + ", ".join(f"{k} = `{v}`" for k, v in train.items()) + ".\n" if train else
             "Model and training: no fold `config.json` in the run.\n")
    return text


def _estimates(r: dict) -> str:
    rows = []
    for name, d in r["discrimination"].items():
        b, e = d["breast"], d["examination"]
        rows.append({"set": name, "breast AUC": fmt(b["auc"], b["auc_ci"]), "breast PR-AUC": fmt(b["pr_auc"], b["pr_auc_ci"]),
                     f"breast pF1 at {b['threshold']:.4g}": fmt(b["pf1"], b["pf1_ci"]),
                     "examination AUC": fmt(e["auc"], e["auc_ci"])})
    return ("## 4. Estimates (95 % intervals: percentile bootstrap over patients, "
            f"{r['settings']['bootstrap']} resamples)\n\n{_table(rows)}\nThe holdout row is the one to quote; the "
            "out-of-fold row chose the threshold.\n")


def _operating(r: dict) -> str:
    s, op = r["settings"], r["operating"]
    pi = s["screening_prevalence"]
    text = ("## 5. Operating points\n\nEach point is chosen on the out-of-fold predictions, then applied unchanged "
            "to the holdout. A breast is positive when its score reaches the threshold; an examination when either "
            f"breast does.\n\n{_table(r['points'].assign(threshold=r['points'].threshold.map('{:.6g}'.format)).to_dict('records'))}\n")
    bcsc = [{"point": b.point, "set": b.estimate, "threshold": f"{b.threshold:.6g}",
             "sensitivity %": _pct(b.sensitivity), "specificity %": _pct(b.specificity),
             "recall rate %": _pct(b.recall_rate), "CDR per 1,000": fmt(b.cdr_per_1000, digits=1),
             "PPV1 %": _pct(b.ppv1), "acceptable": "yes" if b.acceptable else "no"}
            for b in r["bcsc"].itertuples()]
    b = screening.BCSC
    bcsc.append({"point": "BCSC radiologists", "set": screening.BCSC_SOURCE, "threshold": "",
                 "sensitivity %": _pct(b["sensitivity"]), "specificity %": _pct(b["specificity"]),
                 "recall rate %": _pct(b["recall_rate"]), "CDR per 1,000": fmt(b["cdr_per_1000"], digits=1),
                 "PPV1 %": _pct(b["ppv1"]), "acceptable": "range: sensitivity >= 80 % with specificity >= 85 %"})
    text += (f"### Per examination, beside the BCSC benchmarks\n\nRecall rate, CDR and PPV1 at the screening "
             f"prevalence {1000 * pi:.1f} per 1,000, {screening.ADJUSTMENT_NOTE}.\n\n{_table(bcsc)}\n")
    rows = []
    for o in op.itertuples():
        rows.append({"set": o.estimate, "level": o.level, "point": o.point, "threshold": f"{o.threshold:.6g}",
                     "n": o.n, "cancers": o.cancers, "TP": o.true_positives, "FP": o.false_positives,
                     "sensitivity %": _pct(o.sensitivity, o.sensitivity_ci),
                     "specificity %": _pct(o.specificity, o.specificity_ci),
                     "recall % (data)": _pct(o.recall_rate, o.recall_rate_ci),
                     "CDR /1,000 (data)": fmt(o.cdr_per_1000, o.cdr_per_1000_ci, 1),
                     "PPV1 % (data)": _pct(o.ppv1, o.ppv1_ci),
                     f"recall % ({1000 * pi:.1f}/1,000)": _pct(o.screening_recall_rate, o.screening_recall_rate_ci),
                     f"CDR /1,000 ({1000 * pi:.1f}/1,000)": fmt(o.screening_cdr_per_1000, o.screening_cdr_per_1000_ci, 1),
                     f"PPV1 % ({1000 * pi:.1f}/1,000)": _pct(o.screening_ppv1, o.screening_ppv1_ci)})
    text += ("### Every point, per examination and per breast, with 95 % intervals\n\n\"(data)\": at the data's own "
             "prevalence (plain counts); the last three columns reweighted to the screening prevalence. Per breast, "
             f"recall rate, CDR and PPV1 count breasts instead of examinations.\n\n{_table(rows)}")
    return text


def _calibration(r: dict) -> str:
    cal = r["calibration"]
    names = [k for k in cal if k not in ("judged_on", "reliability")]
    rows = [{"probabilities": n + (f" (fitted {cal[n]['fitted_on']})" if n != "raw" else ""),
             "ECE": fmt(cal[n]["ece"], cal[n]["ece_ci"]), "Brier": fmt(cal[n]["brier"], cal[n]["brier_ci"]),
             "slope": fmt(cal[n]["slope"], cal[n]["slope_ci"], 2), "intercept": fmt(cal[n]["intercept"], cal[n]["intercept_ci"], 2),
             "mean predicted": fmt(cal[n]["mean_predicted"]), "observed rate": fmt(cal[n]["observed_rate"])} for n in names]
    bins = [{"bin": f"[{b.low:.1f}, {b.high:.1f})", "breasts": b.n, "cancers": b.cancers,
             "mean predicted": f"{b.mean_predicted:.3f}", "observed": f"{b.observed:.3f}"}
            for b in cal["reliability"]["raw"].itertuples()]
    return (f"## 6. Calibration ({cal['judged_on']}, per breast)\n\nSlope: logistic regression of the outcome on "
            "logit(p); intercept: the same with the slope fixed at 1 (calibration-in-the-large); 1 and 0 when "
            f"calibrated. ECE over {cal['raw']['bins']} equal-width bins.\n\n"
            f"{_table(rows)}\nReliability (raw probabilities):\n\n{_table(bins)}")


def _subgroups(r: dict) -> str:
    s = r["settings"]
    table = display(r["subgroups"])
    flagged = table[table.flag != ""]
    text = (f"## 7. Subgroups ({s['judged_on']}, per breast, at the `{s['subgroup_point']}` point, threshold "
            f"{s['subgroup_threshold']:.6g})\n\nAUC, sensitivity and specificity with 95 % intervals over the "
            "subgroup's patients; n/a where a figure is undefined (no cancer, or no cancer-free breast). "
            "A flag marks a subgroup whose interval excludes the overall figure (not corrected for multiplicity; a "
            "degenerate interval such as [1.000, 1.000] from a few cases is never flagged).\n\n"
            + _table(table.to_dict("records")))
    if r["subgroups_absent"]:
        text += f"\nNot recorded for these breasts: {', '.join(r['subgroups_absent'])}.\n"
    text += (f"\nFlagged: {len(flagged)} subgroup(s)" + (": " + "; ".join(f"{f.subgroup} = {f.value} ({f.flag})"
                                                                          for f in flagged.itertuples()) if len(flagged) else "") + ".\n")
    return text


def _limitations(r: dict) -> str:
    items = []
    if r["synthetic"]:
        items.append(SYNTHETIC_WARNING)
    elif not r.get("data_found", True):
        items.append(f"The data folder (`{r['data_dir']}`) was not found from here (a relative path recorded from "
                     "another working folder, or moved): whether the data is synthetic could not be checked, and "
                     "density subgroups are missing.")
    hold = r["data"]["holdout"]
    if not hold.get("breasts"):
        items.append("No locked holdout: every figure is out of fold, on the breasts where the operating points "
                     "(and any recalibration) were chosen, so each is optimistic.")
    elif hold.get("cancer_examinations", 0) < 50:
        items.append(f"The holdout holds {hold.get('cancer_examinations', 0)} cancer examination(s): sensitivity, "
                     "CDR and PPV1 rest on few cancers, and their intervals are wide.")
    items += [("Operating points and recalibration were chosen on the out-of-fold predictions of the same data "
               "source; no external validation. Performance on other sites, machines or populations is unknown."),
              ("CDR, recall rate and PPV1 at the screening prevalence assume that sensitivity and specificity carry "
               "over unchanged from this enriched data set to a screening population."),
              ("BCSC sensitivity counts cancers diagnosed within a year of screening (interval cancers included); "
               "here a cancer is the data's label, so the two sensitivities are not measured the same way."),
              ("An examination is a patient's images in this data set (one examination per patient); priors are "
               "not used.")]
    return "## 8. Limitations\n\n" + "".join(f"- {i}\n" for i in items)


def _tripod() -> str:
    rows = [{"item": i, "topic": t, "where in this card": w} for i, t, w in TRIPOD_AI]
    return ("## 9. TRIPOD+AI items answered (Collins et al., BMJ 2024; 385:e078378)\n\n" + _table(rows)
            + "\nNot answered here (a manuscript's job): title and abstract, dates of data collection, ethics, "
              "funding, registration, patient involvement, interpretation.\n")


def render(run, result: dict) -> str:
    """The Markdown of the card for ``result`` (:func:`mammo_utils.judge.clinical.judge_run`)."""
    run = Path(run)
    head = f"# Model card: {run.name}\n\nWritten from the run folder `{run}`.\n\n"
    if result["synthetic"]:
        head += f"> {SYNTHETIC_WARNING}\n\n"
    return "\n".join([head + _intended_use(result), _data(result), _training_section(run), _estimates(result),
                      _operating(result), _calibration(result), _subgroups(result), _limitations(result), _tripod()])


def as_json(result: dict) -> dict:
    """The figures of the card as JSON (tables as records, NaN as null)."""
    out = {k: v for k, v in result.items() if k not in ("breasts", "points", "operating", "bcsc", "subgroups",
                                                         "calibration")}
    out.update(points=result["points"].to_dict("records"), operating_points=result["operating"].to_dict("records"),
               bcsc=result["bcsc"].to_dict("records"), subgroups=result["subgroups"].to_dict("records"),
               calibration={k: ({n: t.to_dict("records") for n, t in v.items()} if k == "reliability" else v)
                            for k, v in result["calibration"].items()})
    return clean(out)


def write_model_card(run, result: dict | None = None, **options) -> Path:
    """Write ``<run>/model_card.md`` and ``<run>/model_card.json``; ``result`` None: judge the run now
    (``options`` go to :func:`mammo_utils.judge.clinical.judge_run`). Returns the Markdown's path."""
    from ..judge.clinical import judge_run

    result = judge_run(run, **options) if result is None else result
    paths.model_card_json(run).write_text(json.dumps(as_json(result), indent=2))
    path = paths.model_card_md(run)
    path.write_text(render(run, result), encoding="utf-8")
    return path


def read_model_card(run) -> str | None:
    """The card's Markdown, or None when the run has none yet."""
    path = paths.model_card_md(run)
    return path.read_text(encoding="utf-8") if path.exists() else None

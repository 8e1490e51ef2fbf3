"""Performance in subgroups: does the pooled figure hide a group where the model fails?

Per age band, breast density, site, machine, source (dataset) and implant, on the breasts judged
(the holdout): the number of breasts, cancer breasts and patients, AUC, and sensitivity and specificity
at the chosen operating point, each with a 95 % interval over the subgroup's patients (TRIPOD+AI items
14, 20b and 23a). A figure a subgroup cannot define (AUC or specificity without a cancer-free breast,
AUC or sensitivity without a cancer breast) is NaN, shown "n/a": undefined is not zero. A subgroup
is flagged when its interval excludes the overall figure: a signal worth a look, not a test (nothing
here corrects for the many groups looked at). A degenerate interval (every resample alike: six
cancer-free women all called negative give specificity [1, 1]) says nothing about the spread and is
never flagged.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import metrics, tables
from .bootstrap import (
    patient_groups,
    percentile_interval,
    ratio_interval,
    resample_weights,
    weighted_auc,
)

SUBGROUPS = ("age_band", "density", "site_id", "machine_id", "source", "implant")
METADATA = ("age", "density", "implant", "site_id", "machine_id", "source")  # per-image columns, constant per breast
AGE_BANDS = ((0, 50, "<50"), (50, 60, "50-59"), (60, 70, "60-69"), (70, 200, ">=70"))
FIGURES = ("auc", "sensitivity", "specificity")


def age_band(age) -> pd.Series:
    """Screening age bands (<50, 50-59, 60-69, >=70); ``unknown`` where the age is missing."""
    age = pd.to_numeric(pd.Series(age), errors="coerce")
    out = pd.Series("unknown", index=age.index, dtype=object)
    for lo, hi, name in AGE_BANDS:
        out[(age >= lo) & (age < hi)] = name
    return out


def with_metadata(breasts: pd.DataFrame, images: pd.DataFrame, extra: pd.DataFrame | None = None) -> pd.DataFrame:
    """``breasts`` (one row per ``prediction_id``) with each breast's metadata from its ``images``, plus
    the columns only ``extra`` has (e.g. density from the data's train.csv, joined on ``image_id``), and
    ``age_band``. ``source`` is ``rsna`` for data without one."""
    images = tables.with_prediction_id(images)
    if extra is not None and "image_id" in extra and "image_id" in images:
        more = [c for c in METADATA if c in extra and c not in images]
        images = images.merge(extra[["image_id", *more]].astype({"image_id": str}), how="left",
                              on="image_id") if more else images
    cols = [c for c in METADATA if c in images and c not in breasts]
    meta = images.groupby("prediction_id", sort=False)[cols].first() if cols else None
    out = breasts.merge(meta, how="left", left_on="prediction_id", right_index=True) if meta is not None else breasts
    out = out.assign(source=tables.sources(out))
    return out.assign(age_band=age_band(out["age"]).to_numpy()) if "age" in out else out


def absent(breasts: pd.DataFrame, by=SUBGROUPS) -> list[str]:
    """The subgroup columns these breasts do not carry (density is not in a holdout's test-time columns)."""
    return [c for c in by if c not in breasts]


def _figures(group: pd.DataFrame, threshold: float, n_boot: int, seed: int, alpha: float) -> dict:
    y, p = group.cancer.to_numpy().astype(bool), group.pred.to_numpy(dtype=np.float64)
    called, groups = p >= threshold, patient_groups(group)
    out = {"breasts": len(y), "cancer_breasts": int(y.sum()), "patients": len(set(groups)),
           "auc": metrics.auc(y, p)}
    weights = resample_weights(len(y), n_boot, seed, groups)
    out["auc_ci"] = list(percentile_interval(weighted_auc(y, p, weights), alpha)) \
        if out["auc"] == out["auc"] else [float("nan")] * 2
    for name, hit, of in (("sensitivity", y & called, y), ("specificity", ~y & ~called, ~y)):
        out[name] = float(hit.sum() / of.sum()) if of.any() else float("nan")
        out[f"{name}_ci"] = list(ratio_interval(hit, of, weights, alpha)) if of.any() else [float("nan")] * 2
    return out


def flags(row: dict, overall: dict) -> str:
    """Which of the figures' intervals exclude the overall figure, e.g. ``"sensitivity below overall"``."""
    found = []
    for name in FIGURES:
        lo, hi = row[f"{name}_ci"]
        ref = overall[name]
        if lo < hi and not lo - 1e-9 <= ref <= hi + 1e-9:  # undefined (NaN) or degenerate intervals never are
            found.append(f"{name} {'below' if hi < ref else 'above'} overall")
    return "; ".join(found)


def subgroup_table(breasts: pd.DataFrame, threshold: float, by=SUBGROUPS, n_boot: int = 500, seed: int = 0,
                   alpha: float = 0.05) -> pd.DataFrame:
    """One row for all breasts, then one per value of each subgroup column present (see the module
    docstring): counts, AUC, sensitivity and specificity at ``threshold`` with intervals, and ``flag``."""
    overall = _figures(breasts, threshold, n_boot, seed, alpha)
    rows = [{"subgroup": "overall", "value": "all", **overall, "flag": ""}]
    for col in by:
        if col not in breasts:
            continue
        values = breasts[col].astype(object).where(breasts[col].notna(), "unknown").astype(str)
        for value, group in breasts.groupby(values.to_numpy(), sort=True):
            row = {"subgroup": col, "value": value, **_figures(group, threshold, n_boot, seed, alpha)}
            rows.append({**row, "flag": flags(row, overall)})
    return pd.DataFrame(rows)


def fmt(value, ci=None, digits: int = 3) -> str:
    """``0.812 [0.700, 0.901]``, or ``n/a`` for an undefined figure."""
    if value is None or value != value:
        return "n/a"
    text = f"{value:.{digits}f}"
    if ci is not None and None not in ci and ci[0] == ci[0]:
        text += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return text


def display(table: pd.DataFrame) -> pd.DataFrame:
    """The subgroup table as text, figures with their intervals, "n/a" where undefined."""
    out = table[["subgroup", "value", "breasts", "cancer_breasts", "patients"]].copy()
    for name in FIGURES:
        out[name] = [fmt(v, ci) for v, ci in zip(table[name], table[f"{name}_ci"])]
    out["flag"] = table.flag
    return out

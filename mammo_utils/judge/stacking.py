"""Stacking, the cheap alternative to fusing metadata inside the network: a logistic regression on each
breast's out-of-fold image probability (as a logit) and its test-time metadata.

It is trained on OOF breasts only; its decision threshold is chosen on its own cross-validated OOF
predictions (grouped by patient), so no breast it is judged on was used to choose anything; and it
is judged once on the locked holdout, beside the end-to-end fusion.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import metrics, paths

NUMBERS = ("age",)
CATEGORIES = ("implant", "machine_id", "site_id")


def breast_rows(images: pd.DataFrame, aggregate: str) -> pd.DataFrame:
    """One row per breast: the aggregated image probability, the label and the breast's metadata."""
    from ..tables import with_prediction_id

    images = with_prediction_id(images)
    breasts = metrics.aggregate_breasts(images.dropna(subset=["pred"]), how=aggregate)
    extra = [c for c in NUMBERS + CATEGORIES if c in images and c not in breasts]
    if extra:
        first = images.groupby("prediction_id")[extra].first()
        breasts = breasts.join(first, on="prediction_id")
    return breasts


def _pipeline(columns: list[str]):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numbers = ["logit"] + [c for c in NUMBERS if c in columns]
    categories = [c for c in CATEGORIES if c in columns]
    parts = [("numbers", make_pipeline(SimpleImputer(add_indicator=True), StandardScaler()), numbers)]
    if categories:
        parts.append(("categories", OneHotEncoder(handle_unknown="ignore"), categories))
    return make_pipeline(ColumnTransformer(parts), LogisticRegression(C=1.0, max_iter=1000))


def features(breasts: pd.DataFrame) -> pd.DataFrame:
    p = breasts.pred.clip(1e-6, 1 - 1e-6).astype(float)
    out = pd.DataFrame({"logit": np.log(p / (1 - p))}, index=breasts.index)
    for c in NUMBERS:
        if c in breasts:
            out[c] = pd.to_numeric(breasts[c], errors="coerce")
    for c in CATEGORIES:
        if c in breasts:
            out[c] = breasts[c].astype(str)
    return out


def fit_and_judge(oof_breasts: pd.DataFrame, holdout: pd.DataFrame, threshold_method: str = "best",
                  quantile: float = 0.97, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """(OOF breasts with cross-validated stacked ``pred``, holdout breasts with stacked ``pred``, threshold)."""
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict

    from .evaluate import choose_threshold

    x, y = features(oof_breasts), oof_breasts.cancer.astype(int).to_numpy()
    model = _pipeline(list(x.columns))
    n_splits = int(min(5, max(2, y.sum())))
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    oof_stacked = oof_breasts.assign(pred=cross_val_predict(model, x, y, groups=oof_breasts.patient_id, cv=cv,
                                                            method="predict_proba")[:, 1])
    threshold = choose_threshold(y, oof_stacked.pred.to_numpy(), threshold_method, quantile)
    model.fit(x, y)
    held = holdout.assign(pred=model.predict_proba(features(holdout))[:, 1]) if len(holdout) else holdout
    return oof_stacked, held, float(threshold)


def run_stacking(run, aggregate: str, threshold_method: str = "best", quantile: float = 0.97, n_boot: int = 500,
                 seed: int = 0) -> dict:
    """Stack a run's OOF and holdout predictions; the holdout estimate, with the breasts written to
    ``paths.stacking_csv(run)`` (for the paired comparisons of a sweep)."""
    from ..tables import read_csv
    from .estimates import clean, estimate

    oof = breast_rows(read_csv(paths.oof_csv(run)), aggregate)
    held_images = read_csv(paths.holdout_predictions_csv(run)) if paths.holdout_predictions_csv(run).exists() \
        else pd.DataFrame()
    held = breast_rows(held_images, aggregate) if len(held_images) else pd.DataFrame(columns=oof.columns)
    oof_stacked, held_stacked, threshold = fit_and_judge(oof, held, threshold_method, quantile, seed)
    held_stacked[["prediction_id", "patient_id", "cancer", "pred"]].to_csv(paths.stacking_csv(run), index=False)
    out = estimate(held_stacked, threshold, n_boot, seed)
    out["oof_auc_cv"] = metrics.auc(oof_stacked.cancer, oof_stacked.pred)
    out["columns"] = [c for c in features(oof).columns]
    out = clean(out)
    out["note"] = ("stacking: logistic regression on OOF probability + metadata, fitted on OOF breasts, "
                   "threshold from its cross-validated OOF predictions, judged on the holdout")
    return out

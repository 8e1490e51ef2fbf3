"""The mistake browser: a run's worst false negatives and false positives, per breast, in the patient browser."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import paths
from .viewer import PatientViewer


class MistakeBrowser(PatientViewer):
    """The worst false negatives and false positives of a run's validation predictions, per breast.

    Steps through the breasts (not patients) ordered by how wrong they are: lowest-scored cancer
    breasts and highest-scored cancer-free breasts, alternating; each shows all views of the patient
    with the model's probability and Grad-CAM (on the preprocessed images).
    """

    def __init__(self, run_dir, fold: int = 0, aggregate: str | None = None, threshold: float | None = None,
                 n: int = 10, data_dir=None, **kw):
        import json

        from .. import metrics
        from ..judge.evaluate import read_predictions, trained_aggregation
        from ..learn.runs import Run

        run = Path(run_dir)
        current = Run(run).fold(fold)  # the fold's current outputs, of the run's recipe
        preds = read_predictions(current.folder)
        if data_dir is None:
            pre = json.loads((Path(current.config["preprocessed"]) / paths.PREPROCESS_CONFIG).read_text())
            data_dir = pre["data"]
        breasts = metrics.aggregate_breasts(preds, how=trained_aggregation(current.folder, aggregate))
        fn = breasts[breasts.cancer == 1].nsmallest(n, "pred").assign(kind="false negative")
        fp = breasts[breasts.cancer == 0].nlargest(n, "pred").assign(kind="false positive")
        if threshold is not None:
            fn, fp = fn[fn.pred < threshold], fp[fp.pred >= threshold]
        order = pd.concat([fn, fp]).sort_values("pred", key=lambda p: -np.abs(p - 0.5)).reset_index(drop=True)
        if order.empty:
            order = pd.concat([breasts[breasts.cancer == 1].nsmallest(1, "pred").assign(kind="lowest cancer"),
                               breasts[breasts.cancer == 0].nlargest(1, "pred").assign(kind="highest negative")])
        self.mistakes = order.reset_index(drop=True)
        super().__init__(data_dir, split="train", run_dir=run, fold=fold, **kw)
        self.overlays.update(cam=True)
        self.patients = [str(p) for p in self.mistakes.patient_id.drop_duplicates()]
        self.select(self.patients[0])
        for i in self.view_states:
            self.view_states[i].mode = "preprocessed"

    def select(self, patient_id):
        super().select(patient_id)
        for i in self.view_states:
            if self._preprocessed_dir() is not None:
                self.view_states[i].mode = "preprocessed"
        return self

    def title(self) -> str:
        rows = self.mistakes[self.mistakes.patient_id == self.patient_id]
        what = "; ".join(f"{r.prediction_id}: {r.kind}, breast p={r.pred:.2f}" for r in rows.itertuples())
        return f"{super().title()} | {what}"

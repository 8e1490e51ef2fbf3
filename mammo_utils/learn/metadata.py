"""Beyond the pixels: the table's columns as model inputs (metadata) and as extra targets (auxiliary heads).

* **Metadata** are test-time columns (``test.csv`` has them too): age, implant, view, laterality,
  machine_id, site_id. Age is standardised with a missing indicator; a category is embedded, with
  slot 0 for a value never seen in training (a machine that appears only at test time) or missing.
* **Auxiliary targets** are training-only columns (BIRADS, density, biopsy, invasive...): each gets a
  classification head whose loss skips rows where the value is missing; only the cancer head is used
  at test time.

The encoder itself is :class:`~mammo_utils.learn.models.MetadataEncoder`. A spec (what
:func:`fit_metadata` and :func:`fit_aux` return) is plain JSON: it travels in the
checkpoint's ``model_args`` and in ``config.json``, so ``predict`` and the Kaggle notebook need
nothing else. Batches carry raw values (``raw_values``); the model encodes them with its own spec.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..errors import UserError

TEST_TIME = ("age", "implant", "view", "laterality", "machine_id", "site_id")
TRAIN_ONLY = ("cancer", "biopsy", "invasive", "BIRADS", "density", "difficult_negative_case")
NUMERIC = ("age",)
EMBED_DIM = 4        # per category column
HIDDEN = 32          # width of the metadata features fused with the image features


def parse_columns(value) -> list[str]:
    """``"age,view"``, ``["age", "view"]``, ``'["age", "view"]'``, ``""`` or None as a list of column names."""
    if value is None or value == "":
        return []
    items = value.strip().strip("[]").split(",") if isinstance(value, str) else list(value)
    return [str(c).strip().strip("'\"").strip() for c in items if str(c).strip().strip("'\"").strip()]


def check_metadata(columns) -> list[str]:
    cols = parse_columns(columns)
    for c in cols:
        if c in TRAIN_ONLY:
            raise UserError(f"metadata column {c!r} is in train.csv only: test.csv has no such column, so a model "
                            f"that reads it could not predict the test set; use it as an auxiliary target "
                            f"(aux_targets) instead")
        if c not in TEST_TIME:
            raise UserError(f"metadata column {c!r} is not a test-time column; choose from {list(TEST_TIME)}")
    return cols


def parse_aux(value) -> dict[str, float]:
    """``"BIRADS,density:0.5"`` or ``{"BIRADS": 0.2}`` as {target: loss weight} (default weight 0.2)."""
    if isinstance(value, dict):
        out = {str(k): float(v) for k, v in value.items()}
    else:
        out = {}
        for item in parse_columns(value):
            name, _, weight = item.partition(":")
            out[name.strip()] = float(weight) if weight else 0.2
    for name, weight in out.items():
        if name not in TRAIN_ONLY or name == "cancer":
            raise UserError(f"aux target {name!r}: choose from {[c for c in TRAIN_ONLY if c != 'cancer']}")
        if not weight >= 0:
            raise UserError(f"aux target {name!r}: the loss weight must be >= 0, got {weight}")
    return out


def as_text(value) -> str:
    """A category value as text: ``49.0`` -> ``"49"``, NaN/None -> ``""`` (missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    return str(value).strip()


def as_number(value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return v


def fit_metadata(df: pd.DataFrame, columns) -> dict:
    """The encoding of ``columns`` learned from training rows: mean and spread of a number, the values
    of a category (anything else at test time goes to the 'unseen' slot)."""
    spec = {}
    for c in check_metadata(columns):
        if c not in df:
            raise UserError(f"metadata column {c!r} is not in the training table")
        if c in NUMERIC:
            v = pd.to_numeric(df[c], errors="coerce")
            spec[c] = {"kind": "number", "mean": float(v.mean()) if v.notna().any() else 0.0,
                       "std": float(v.std()) if v.notna().sum() > 1 and v.std() > 0 else 1.0}
        else:
            spec[c] = {"kind": "category", "values": sorted({as_text(x) for x in df[c]} - {""})}
    return spec


def fit_aux(df: pd.DataFrame, targets) -> dict:
    """{target: {"classes": [...], "weight": w}}: the classes seen in training (missing values excluded)."""
    spec = {}
    for name, weight in parse_aux(targets).items():
        if name not in df:
            raise UserError(f"aux target {name!r} is not in the training table")
        classes = sorted({as_text(x) for x in df[name]} - {""})
        if len(classes) < 2:
            raise UserError(f"aux target {name!r} has {len(classes)} class(es) in the training rows: nothing to learn")
        spec[name] = {"classes": classes, "weight": weight}
    return spec


def raw_values(row: dict, columns) -> dict:
    """One row's values for a batch: numbers as floats (NaN when missing), categories as text."""
    return {c: as_number(row.get(c)) if c in NUMERIC else as_text(row.get(c)) for c in columns}


def column_values(values, n: int) -> list:
    """A collated column as a flat list: a tensor, a list of texts, or (the views of a batch of breasts)
    K such entries of B values each, flattened breast by breast as the images are."""
    if hasattr(values, "reshape"):  # a tensor
        return values.reshape(-1).tolist()
    if values and isinstance(values[0], (list, tuple)) or values and hasattr(values[0], "reshape"):
        per_view = [column_values(v, n) for v in values]
        return [x for b in range(len(per_view[0])) for x in (pv[b] for pv in per_view)]
    return list(values)


def aux_targets(raw: dict, spec: dict, n: int, device) -> dict:
    """Class indices per aux target (-1 where the value is missing or was never seen in training)."""
    import torch

    out = {}
    for name, s in spec.items():
        index = {v: i for i, v in enumerate(s["classes"])}
        values = column_values(raw[name], n)
        out[name] = torch.tensor([index.get(as_text(v), -1) for v in values], device=device)
    return out


def aux_loss(logits: dict, targets: dict, spec: dict):
    """Weighted sum of per-target cross-entropies over the rows that have a value; a target with no
    value in the batch adds 0 (never NaN)."""
    import torch.nn.functional as F

    total = None
    for name, s in spec.items():
        y = targets[name]
        known = y >= 0
        term = F.cross_entropy(logits[name][known].float(), y[known]) if known.any() else \
            logits[name].sum() * 0.0  # keeps the graph (DDP) without a NaN mean over nothing
        total = s["weight"] * term if total is None else total + s["weight"] * term
    return total

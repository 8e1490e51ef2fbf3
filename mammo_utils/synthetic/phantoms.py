"""Phantoms: the hard cases of breast finding, drawn in memory with the generator's anatomy, each with
its exact tissue mask, scored by :mod:`..crop_quality` against the previous method."""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from ..prepare import crop_quality
from .anatomy import breast_params, draw_breast, lesion_position
from .film import FILM_ARTEFACTS, film_scan

PHANTOM_KINDS = ("fatty", "fatty_lobular", "wide_pectoral", "dense", "touching", "labelled", "film_edge", "film_label",
                 "film", "film_padded")
FILM_KINDS = {"film_edge": ("edge", "top_edge"), "film_label": ("label",), "film": FILM_ARTEFACTS,
              "film_padded": ("edge", "label")}


def phantom(kind: str, seed: int = 0, shape=(520, 416), noise: float = 0.004):
    """(image in the read_image convention, true tissue mask, lesion centre) for one hard case."""
    rng = np.random.default_rng([seed, PHANTOM_KINDS.index(kind)])
    b = breast_params(rng, 0.3, False)
    view = "MLO" if kind in ("wide_pectoral", "touching") or rng.random() < 0.5 else "CC"
    if kind in ("fatty", "fatty_lobular", "labelled"):
        b.update(edge=0.07, density=0.02, lobular=0.8 if kind == "fatty_lobular" else 0.0, nipple=True, fold=True)
    elif kind == "wide_pectoral":
        b.update(pect_u=0.55, pect_v=0.85, pect_gain=0.5, edge=0.09, density=0.03)
    elif kind == "dense":
        b.update(density=0.95)
    elif kind == "touching":
        b.update(height=0.56, cy=0.42)
    a, mask = draw_breast(rng, shape, view, b["density"], b)
    if kind in FILM_KINDS:  # a scanned film: edge strips, a label on the skin line, a ruler, marks
        img, mask, _, (dy, dx) = film_scan(a, mask, rng, FILM_KINDS[kind])
        img = np.clip(img + rng.normal(0, noise, img.shape), 0, 1).astype(np.float32)
        if kind == "film_padded":  # a film narrower than the scan, padded with exact zeros (as mini-MIAS)
            pad = shape[1] // 8
            img, mask, dx = np.pad(img, ((0, 0), (pad, 0)))[:, :shape[1]], np.pad(mask, ((0, 0), (pad, 0)))[:, :shape[1]], dx + pad
        y, x = lesion_position(shape, view, b)
        return img, mask, (y + dy, x + dx)
    img = np.clip(a - 0.04 + rng.normal(0, noise, a.shape), 0, 1).astype(np.float32)  # window: air at about 0
    if kind == "labelled":
        text = np.zeros(shape, np.uint8)
        cv2.putText(text, "L-MLO", (shape[1] - 150, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.2, 255, 3)
        img[text > 0] = 1.0
        img[:4, :] = 1.0           # detector edge strip touching the breast
        img[:, -5:] = 1.0
    return img, mask, lesion_position(shape, view, b)


def hard_examples(seed: int = 0, kinds=PHANTOM_KINDS):
    """(images, true masks, our boxes, legacy boxes, titles) on one phantom of each hard kind."""
    images, masks, ours, legacy, titles = [], [], [], [], []
    for kind in kinds:
        img, mask, _ = phantom(kind, seed)
        s_new = crop_quality.score(img, mask)
        y0, x0, y1, x1 = crop_quality.legacy_bbox(img)
        kept_old = mask[y0:y1, x0:x1].sum() / mask.sum()
        images.append(img)
        masks.append(mask)
        ours.append(s_new["box"])
        legacy.append((y0, x0, y1, x1))
        titles.append(f"{kind}: kept {s_new['kept']:.3f} (old {kept_old:.3f})")
    return images, masks, ours, legacy, titles


def check_phantoms(seeds=range(7)) -> pd.DataFrame:
    """Scores on every phantom kind for several seeds (the test and benchmark use it)."""
    rows = []
    for seed in seeds:
        for kind in PHANTOM_KINDS:
            img, mask, lesion = phantom(kind, seed)
            rows.append({"kind": kind, "seed": seed, **crop_quality.score(img, mask, lesion)})
    return pd.DataFrame(rows)

"""Phantoms: the hard cases of breast finding, drawn in memory with the generator's anatomy, each with
its exact tissue mask, scored by :mod:`..crop_quality` against the previous method."""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from ..prepare import crop_quality
from .anatomy import (
    breast_params,
    draw_breast,
    draw_lesion,
    lesion_position,
    smooth_noise,
)
from .film import (
    FILM_ARTEFACTS,
    edge_glow,
    film_border,
    film_scan,
    holder_strips,
    to_film_bits,
)

PHANTOM_KINDS = ("fatty", "fatty_lobular", "wide_pectoral", "dense", "touching", "labelled", "film_edge", "film_label",
                 "film", "film_padded", "film_glow", "film_holder")
FILM_KINDS = {"film_edge": ("edge", "top_edge"), "film_label": ("label",), "film": FILM_ARTEFACTS,
              "film_padded": ("edge", "label")}
CBIS_CC_SHAPE = (1170, 648)    # 4688x2592 in a quarter: the same 390x216 work image
MIAS_SHAPE = (1024, 1024)


def glow_scan(rng: np.random.Generator, shape=CBIS_CC_SHAPE, noise: float = 0.004):
    """A CBIS-DDSM CC film scan as measured on a real one (4688x2592, seen at 390x216): chest wall on the
    right, the breast over rows 540-4200 of 4688 and 57 % of the width, the background clipped to exactly
    0 (68 % of the pixels), bright border rows at the top and bottom and a faint glow along the chest-wall
    edge above and below the breast. Returns (image, tissue mask, lesion centre)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    depth, top, bottom = 0.57, 540 / 4688, 4200 / 4688
    cy, by = (top + bottom) / 2, (bottom - top) / 2
    t = (yy / h - cy) / by
    r = ((w - 1 - xx) / w / depth + t ** 2) * (1.0 + 0.02 * smooth_noise(rng, shape, 3))  # a CC outline: cut by the chest wall
    mask = r < 1.0
    texture = 0.6 * smooth_noise(rng, shape, 12) + 0.4 * smooth_noise(rng, shape, 40)
    tissue = 0.12 + 0.35 * np.sqrt(np.clip(1.0 - r, 0, 1)) + 0.2 * np.clip(0.4 + 0.35 * texture - 0.45 * r, 0, 1)
    f, g = rng.uniform(0.3, 0.6), rng.uniform(-0.5, 0.5)
    lesion = ((cy + g * by * np.sqrt(1 - f)) * h, w - 1 - f * depth * w)
    tissue = draw_lesion(rng, tissue.astype(np.float32), mask, lesion, 0.03 * h, 0.25, calcs=False)
    img = np.where(mask, np.clip(tissue + rng.normal(0, max(noise, 0.004), shape), 0.02, 1.0), 0.0).astype(np.float32)
    art = np.zeros(shape, bool)
    edge_glow(img, art, "right")
    film_border(img, art, rng)
    return np.clip(img, 0, 1).astype(np.float32), mask, lesion


def holder_scan(rng: np.random.Generator, shape=MIAS_SHAPE, noise: float = 0.004):
    """A mini-MIAS MLO film scan (1024x1024, 8 bits) whose breast fills the film: it touches the top, the
    bottom and the chest wall, so no image side shows air; the air is a dark gap beside the film-holder
    strips of :func:`..film.holder_strips` on the far side. Returns (image, tissue mask, lesion centre)."""
    h = shape[0]
    img, art = np.zeros(shape, np.float32), np.zeros(shape, bool)
    bar_x = holder_strips(img, art, rng)
    b = breast_params(rng, 0.3, False)
    b.update(cy=rng.uniform(0.54, 0.6), height=rng.uniform(0.64, 0.7), depth=rng.uniform(0.92, 0.98),
             pect_u=rng.uniform(0.45, 0.6), pect_v=rng.uniform(0.55, 0.7))
    a, mask = draw_breast(rng, (h, bar_x), "MLO", b["density"], b)
    lesion = lesion_position((h, bar_x), "MLO", b)
    a = draw_lesion(rng, a, mask, lesion, b["lesion_r"] * h, 0.25, calcs=False)
    film = 0.02 + max(noise, 0.02) * rng.standard_normal((h, bar_x)) + np.where(mask, 0.6 * a, 0.0)
    img[:, :bar_x] = film
    full = np.zeros(shape, bool)
    full[:, :bar_x] = mask
    return to_film_bits(img, 8).astype(np.float32) / 255, full, lesion


def phantom(kind: str, seed: int = 0, shape=(520, 416), noise: float = 0.004):
    """(image in the read_image convention, true tissue mask, lesion centre) for one hard case."""
    rng = np.random.default_rng([seed, PHANTOM_KINDS.index(kind)])
    if kind in ("film_glow", "film_holder"):  # measured real scans: their own sizes
        return (glow_scan if kind == "film_glow" else holder_scan)(rng, noise=noise)
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

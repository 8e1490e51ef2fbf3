"""The film-scan look: what digitised film (mini-MIAS, CBIS-DDSM) brings that digital detectors do not.

A fogged, grainy background; a bright strip where the film edge was scanned, on the chest-wall side
and often along the top; a white label that can touch the skin line; a scanner ruler; handwritten
marks. Each artefact is drawn on a display image in [0, 1] (0 = air, breast bright) and returned as a
mask, so a crop can be scored on keeping the breast and leaving the artefacts out.
"""
from __future__ import annotations

import cv2
import numpy as np

FILM_ARTEFACTS = ("edge", "top_edge", "label", "ruler", "marks")


def film_scan(a: np.ndarray, mask: np.ndarray, rng: np.random.Generator, artefacts=FILM_ARTEFACTS,
              label_touching: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """(image, breast mask, artefact mask, (dy, dx) shift of the breast) for an attenuation map ``a``
    whose chest wall is on the left (as :func:`..anatomy.draw_breast` draws it).

    The breast moves right by the film-edge strip, which then runs the full height beside the chest
    wall with no gap, as on a real scan; the label sits on the skin line when ``label_touching``."""
    h, w = a.shape
    strip = max(3, round(0.028 * w)) if "edge" in artefacts else 0
    top = max(3, round(0.02 * h)) if "top_edge" in artefacts else 0
    breast = np.zeros((h, w), bool)
    tissue = np.zeros((h, w), np.float32)
    breast[top:, strip:] = mask[:h - top, :w - strip]
    tissue[top:, strip:] = a[:h - top, :w - strip]
    fog = 0.07 + 0.008 * cv2.resize(rng.random((4, 4)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    img = np.where(breast, 0.08 + 0.78 * tissue, fog) + rng.normal(0, 0.012, (h, w))
    art = np.zeros((h, w), bool)
    if strip:
        art[:, :strip] = True
        img[:, :strip] = 0.93 + rng.normal(0, 0.01, (h, strip))
    if top:
        art[:top, :] = True
        img[:top, :] = 0.9 + rng.normal(0, 0.01, (top, w))
    if "label" in artefacts:
        lh, lw = round(0.09 * h), round(0.26 * w)
        rows = np.flatnonzero(breast.any(axis=1))
        y = int(rows[0] + 0.12 * (rows[-1] - rows[0])) if len(rows) else h // 8
        if label_touching and len(rows):
            x = int(np.flatnonzero(breast[y]).max()) - 2  # overlapping the skin line by two pixels
        else:
            x = w - lw - 4
        x = min(max(x, strip), w - lw - 1)
        y = min(max(y, top), h - lh - 1)
        img[y:y + lh, x:x + lw] = 0.97
        text = np.zeros((h, w), np.uint8)
        cv2.putText(text, "R MLO", (x + lw // 10, y + int(0.7 * lh)), cv2.FONT_HERSHEY_SIMPLEX, lh / 40, 255,
                    max(1, lh // 12))
        img[text > 0] = 0.15
        art[y:y + lh, x:x + lw] = True
        breast[y:y + lh, x:x + lw] = False
    if "ruler" in artefacts:
        y, x0, x1, t = h - round(0.06 * h), round(0.45 * w), w - round(0.05 * w), max(2, round(0.008 * h))
        img[y:y + t, x0:x1] = 0.95
        for x in range(x0, x1, max(4, round(0.02 * w))):
            img[y - 2 * t:y, x:x + max(1, t // 2)] = 0.95
        art[y - 2 * t:y + t, x0:x1] |= img[y - 2 * t:y + t, x0:x1] > 0.9
    if "marks" in artefacts:
        marks = np.zeros((h, w), np.uint8)
        pts = np.stack([np.linspace(0.7 * w, 0.92 * w, 12), 0.2 * h + 0.05 * h * np.sin(np.linspace(0, 9, 12))], 1)
        cv2.polylines(marks, [pts.astype(np.int32)], False, 255, max(1, round(0.004 * w)))
        img[marks > 0] = 0.85
        art |= (marks > 0) & ~breast
    return np.clip(img, 0, 1).astype(np.float32), breast & ~art, art, (top, strip)


def film_border(img: np.ndarray, art: np.ndarray, rng: np.random.Generator, top: float = 3 / 390,
                bottom: float = 4 / 390, level=(0.6, 0.8)) -> None:
    """Bright rows where the scanner saw past the film's top and bottom edges, across the full width, in
    place. As measured on a CBIS-DDSM CC scan at 390x216: the first 3 and the last 4 rows, row means
    from 0.6 to 0.8 of the display range (not the brightest thing on a film with dense tissue or a label)."""
    h, w = img.shape
    for rows in (slice(0, max(1, round(top * h))), slice(h - max(1, round(bottom * h)), h)):
        n = rows.stop - rows.start
        img[rows] = np.linspace(level[1], level[0], n)[:, None] + rng.normal(0, 0.02, (n, w))
        art[rows] = True


def edge_glow(img: np.ndarray, art: np.ndarray, side: str = "right", width: float = 0.05, low: float = 0.01,
              high: float = 0.26) -> None:
    """Light leaking in along one film edge, in place: a band ``width`` of the image wide whose value rises
    from ``low`` to ``high`` towards the edge (as on a CBIS-DDSM CC scan along the chest wall: about 10
    columns of 216). Faint beside a film strip, but above a background clipped to 0; over tissue it adds
    nothing the tissue does not already outshine."""
    h, w = img.shape
    n = max(2, round(width * w))
    ramp = (low + (high - low) * np.linspace(0, 1, n) ** 2).astype(np.float32)
    cols = slice(w - n, w) if side == "right" else slice(0, n)
    ramp = ramp if side == "right" else ramp[::-1]
    glow = np.broadcast_to(ramp, (h, n))
    art[:, cols] |= img[:, cols] < glow
    img[:, cols] = np.maximum(img[:, cols], glow)


def holder_strips(img: np.ndarray, art: np.ndarray, rng: np.random.Generator, side: str = "right",
                  band: float = 0.03, margin: float = 12 / 1024, bar: float = 0.05, gap: float = 0.1,
                  bar_rows: float = 2 / 3) -> int:
    """Film-holder strips along one side, in place, as on a mini-MIAS scan (1024 wide): beyond the film a
    black margin of 12 columns at the image edge, a full-height band at the top of the range ``band`` of
    the width wide, then ``gap`` of the width in, a bar ``bar`` wide over the top ``bar_rows`` of the
    height. Returns the column (on the ``side="right"`` layout) where the strips begin."""
    h, w = img.shape
    m, b, g, r = round(margin * w), round(band * w), round(gap * w), round(bar * w)
    band_x, bar_x = w - m - b, w - m - b - g - r
    view = img if side == "right" else img[:, ::-1]
    mark = art if side == "right" else art[:, ::-1]
    view[:, w - m:] = 0.0
    view[:, band_x:w - m] = 1.0 - 0.02 * rng.random((h, b))  # scanner noise: never an exactly constant column
    view[:round(bar_rows * h), bar_x:bar_x + r] = 1.0 - 0.02 * rng.random((round(bar_rows * h), r))
    mark[:, band_x:] = True
    mark[:round(bar_rows * h), bar_x:bar_x + r] = True
    return bar_x


def to_film_bits(img: np.ndarray, bits: int = 8) -> np.ndarray:
    """Stored values of a scanned film (MONOCHROME2, brighter = denser film)."""
    top = 2 ** bits - 1
    return np.round(np.clip(img, 0, 1) * top).astype(np.uint8 if bits <= 8 else np.uint16)

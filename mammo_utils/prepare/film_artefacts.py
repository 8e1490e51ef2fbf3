"""Film artefacts on a work-size display image: what a scanned film adds around the breast.

The edges of the film (bright strips, or rows foreground across at the film's top and bottom), a faint
glow along an edge, and compact bright rectangles (a label, a ruler, a film-holder bar). All are
geometric and often touch the breast, so :func:`.crop.segment_breast` takes them out before it picks
the breast's components, and never lets one of them be the breast.
"""
from __future__ import annotations

import cv2
import numpy as np

STRIP_FILL = 0.75           # an edge strip: lines with at least this share of very bright pixels ...
PAD_MAX = 0.2               # ... after at most this share of the image of empty padding ...
STRIP_MAX = 0.08            # ... running at most this share of the image in from its edge ...
STRIP_AFTER = 0.5           # ... and then a line with less than this share (the breast is never that uniform)
RECT_FILL = 0.85            # a label or ruler: a very bright object whose convex hull fills this share of its box
RECT_MIN_AREA = 0.001       # ... of at least this share of the image,
RECT_MAX_SHARE = 0.25       # ... at most this share of all the foreground,
RECT_MAX_STD = 0.05         # ... flat: its values spread less than this (display units),
RECT_STEP = 0.8             # ... and a step: the pixels around it at most this share of its height above the air
BAND_DEPTH = 0.04           # a glow along an edge: at most this share of the long side deep ...
BAND_MIN = 0.03             # ... along at least this share of the edge ...
BAND_COVER = 0.9            # ... hugging it on this share of the lines between the image's end and the breast;
BAND_CONTRAST = 0.02        # a line this much brighter than the glow's profile holds tissue (display units)


def very_bright(small: np.ndarray, level: float) -> np.ndarray:
    """Pixels near the top of the image's range: film edges, labels and rulers are the brightest objects."""
    top = float(np.percentile(small, 99.5))
    return small >= level + 0.8 * (top - level)


def edge_strips(bright: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """Lines (rows or columns) that form a bright strip along an image edge: the scanned film edge.

    From each edge inwards, past empty padding (lines with almost no foreground, as on films padded
    to a square), a run of lines mostly very bright, no deeper than ``STRIP_MAX`` of the image and
    followed by a line that is not: a breast touching the edge is never that bright along its whole
    length, so it is never taken for a strip."""
    out = np.zeros(bright.shape, bool)
    h, w = bright.shape
    for axis, n in ((0, h), (1, w)):  # axis 0: rows (top and bottom strips), 1: columns
        fill, used = bright.mean(axis=1 - axis), foreground.mean(axis=1 - axis)
        for order in (np.arange(n), np.arange(n)[::-1]):
            start = 0
            while start < PAD_MAX * n and used[order[start]] < 0.02:
                start += 1
            limit = start + max(2, int(STRIP_MAX * n))
            if limit >= n or fill[order[start]] < STRIP_FILL:
                continue
            end = start
            while end < limit and fill[order[end]] >= STRIP_FILL:
                end += 1
            blurred = 0  # the strip's own blurred border: up to two lines between the two levels
            while blurred < 2 and end + blurred < n - 1 and STRIP_AFTER <= fill[order[end + blurred]] < STRIP_FILL:
                blurred += 1
            end += blurred
            if end < limit and fill[order[end]] < STRIP_AFTER:
                lines = order[:end]
                if axis == 0:
                    out[lines, :] = True
                else:
                    out[:, lines] = True
    return out


def bright_rectangles(small: np.ndarray, bright: np.ndarray, foreground: int, level: float) -> np.ndarray:
    """Very bright objects that fill their bounding box, small beside the breast, flat and standing out
    from what surrounds them: film labels and rulers (text inside included). Dense tissue is never that
    flat, a dense breast is the largest object, not a small one, and the flat bright middle of a fatty
    breast fades into the tissue around it where a label's edge is a step (:func:`_stands_out`)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(bright.view(np.uint8), connectivity=8)
    out = np.zeros(bright.shape, bool)
    for i in range(1, n):
        x, y, w, h, area = stats[i]
        if area < RECT_MIN_AREA * bright.size or min(w, h) < 2 or area > RECT_MAX_SHARE * foreground:
            continue
        if float(np.std(small[y:y + h, x:x + w][labels[y:y + h, x:x + w] == i])) > RECT_MAX_STD:
            continue
        obj = (labels[y:y + h, x:x + w] == i).astype(np.uint8)
        hull = cv2.convexHull(cv2.findNonZero(obj))
        if cv2.contourArea(hull) >= RECT_FILL * w * h and obj.sum() >= 0.5 * w * h:  # text in a label leaves holes
            filled = np.zeros_like(obj)
            cv2.fillConvexPoly(filled, hull, 1)
            if _stands_out(small, filled, y, x, level):
                out[y:y + h, x:x + w] |= filled > 0
    return out


def _stands_out(small: np.ndarray, obj: np.ndarray, y: int, x: int, level: float) -> bool:
    """Whether the object ``obj`` (its box's top-left at ``y, x``) is a step above the ring of pixels
    around it: that ring at most ``RECT_STEP`` of the object's height above the background. A label on
    the skin line measures 0.45-0.65 on the film phantoms, the flat middle of a fatty breast 0.89."""
    g = 3  # the ring: two pixels past the blurred edge
    y0, x0 = max(0, y - g), max(0, x - g)
    region = small[y0:y + obj.shape[0] + g, x0:x + obj.shape[1] + g]
    inside = np.zeros(region.shape, np.uint8)
    inside[y - y0:y - y0 + obj.shape[0], x - x0:x - x0 + obj.shape[1]] = obj
    ring = (cv2.dilate(inside, np.ones((2 * g - 1, 2 * g - 1), np.uint8)) > 0) & (inside == 0)
    if not ring.any():  # it fills the image: nothing to stand out from
        return False
    return float(region[ring].mean()) - level <= RECT_STEP * (float(region[inside > 0].mean()) - level)


def film_artefacts(small: np.ndarray, level: float, raw: np.ndarray, film=None,
                   bright: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(film edge strips and bands, labels or rulers) on a work-size image: geometric, often touching the
    breast, so the component rules would take them for tissue.

    Strips are lines along an edge that are very bright, or foreground across (a scanned film border, not
    always the brightest thing on a film with dense tissue or a label); bands hug an edge of the film
    (``film``: its rows and columns inside any padding, as :func:`unpadded` gives them) beyond the
    breast: a faint glow, or a film-edge strip the breast hides part of (:func:`edge_bands`).
    ``bright``: :func:`very_bright` of ``small``, when the caller has it already."""
    bright = very_bright(small, level) if bright is None else bright
    fg = raw > 0
    strips = edge_strips(bright, fg) | edge_strips(fg, fg)
    rows, cols = film if film is not None else (slice(None), slice(None))
    bands = np.zeros(fg.shape, bool)
    bands[rows, cols] = edge_bands(small[rows, cols], (fg & ~strips)[rows, cols], strips.all(axis=1)[rows],
                                   strips.all(axis=0)[cols])
    return strips | bands, bright_rectangles(small, bright, int(raw.sum()), level)


def edge_bands(small: np.ndarray, fg: np.ndarray, skip_rows: np.ndarray, skip_cols: np.ndarray) -> np.ndarray:
    """Thin foreground bands hugging an image edge from an end of that edge to the breast: light leaking
    along the film edge (a CBIS-DDSM scan shows one about 5 % of the width wide beside the chest wall,
    above and below the breast). Faint, so no brightness test finds it; above a background clipped to 0,
    so it joins the breast and carries the box to the image's ends.

    Along each edge, from each end (past the lines in ``skip_rows``/``skip_cols``: film borders already
    taken out), the lines up to the first whose foreground run from the edge reaches deeper than
    ``BAND_DEPTH`` of the long side (the breast). They are a band when the foreground hugs the edge on
    ``BAND_COVER`` of them over at least ``BAND_MIN`` of the edge: the breast's own tip at an edge comes
    after empty lines, and a breast touching the corner is deep at once, so neither is ever a band.
    The glow is the same all along the edge, so the band stops at the first line brighter than the
    glow's profile (its outer half's median) by ``BAND_CONTRAST``: the breast's thin tip stays tissue."""
    out = np.zeros(fg.shape, bool)
    deep = max(2, round(BAND_DEPTH * max(fg.shape)))
    # (lines seen from one edge, their values, their output view, lines to pass over): left, right, top, bottom
    views = ((fg, small, out, skip_rows), (fg[:, ::-1], small[:, ::-1], out[:, ::-1], skip_rows),
             (fg.T, small.T, out.T, skip_cols), (fg[::-1].T, small[::-1].T, out[::-1].T, skip_cols))
    for lines, values, mark, skip in views:
        depth = np.where(lines.all(axis=1), lines.shape[1], np.argmin(lines, axis=1))  # foreground run from the edge
        for order in (np.arange(len(depth)), np.arange(len(depth))[::-1]):
            order = order[~skip[order]]
            wide = np.flatnonzero(depth[order] > deep)
            if not len(wide):  # the breast never reaches this edge: the component rules decide
                continue
            band = order[:wide[0]]
            if not len(band) or (depth[band] > 0).mean() < BAND_COVER:
                continue
            profile = values[band, :deep]
            glow = np.median(profile[:(len(band) + 1) // 2], axis=0)
            tissue = np.flatnonzero((profile - glow).mean(axis=1) > BAND_CONTRAST)
            band = band[:tissue[0]] if len(tissue) else band
            if len(band) >= BAND_MIN * len(depth):
                mark[band] = np.arange(lines.shape[1])[None, :] < depth[band][:, None]
    return out


def strip_like(small: np.ndarray, bright: np.ndarray, labels: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """Per component of ``labels`` (1..n, ``areas`` their sizes; ``bright`` from :func:`very_bright`): a
    flat, very bright object that fills its bounding box, such as a film-holder band or bar or a label.
    Such an object never sets the size the breast is measured against: with the breast faint or cut in
    pieces, a strip would otherwise win."""
    share = np.bincount(labels[bright], minlength=len(areas) + 1)[1:] / np.maximum(areas, 1)
    out = np.zeros(len(areas), bool)
    for i in np.flatnonzero(share >= STRIP_FILL):
        ys, xs = np.nonzero(labels == i + 1)
        box = (np.ptp(ys) + 1) * (np.ptp(xs) + 1)
        top = bright[ys, xs]  # flat where it is bright: its blurred rim is neither
        out[i] = areas[i] >= RECT_FILL * box and float(np.std(small[ys[top], xs[top]])) <= RECT_MAX_STD
    return out


def unpadded(small: np.ndarray, max_share: float = 0.5) -> tuple[slice, slice]:
    """The image without its constant border lines (rows, columns): the padding a digitised film gets
    to fill a square. Air inside a film is never exactly constant, padding always is, and a background
    model that saw the padding would call the whole film foreground."""
    flat_rows = np.ptp(small, axis=1) == 0
    flat_cols = np.ptp(small, axis=0) == 0

    def run(flags) -> int:
        k = 0
        while k < max_share * len(flags) and flags[k]:
            k += 1
        return k if k < max_share * len(flags) else 0

    h, w = small.shape
    return slice(run(flat_rows), h - run(flat_rows[::-1])), slice(run(flat_cols), w - run(flat_cols[::-1]))

"""Pure array operations that find, crop and orient the breast; float32 HxW in [0, 1], breast bright.

Segmentation treats the breast as one object and models the *background*, not the tissue:

1. work on a resampled copy (long side ``work_px``), lightly blurred;
2. background level and noise come from the image border: its lower quartile is background in any
   mammogram (the far side of the image is air), and the spread of the values below the median
   gives the noise sigma; the threshold is a few sigmas above that level, so fatty tissue that
   fades into the noise near the skin stays in;
   (when no side is air, as on a film the breast fills, the image's darkest region is modelled);
3. film artefacts that touch the breast are taken out first (:mod:`.film_artefacts`): a strip or a
   border along an image edge (the scanned film edge), a faint glow hugging an edge beyond the
   breast, and a compact bright rectangle (a film label, a ruler); then an opening a little wider
   than a detector strip or a label stroke cuts thinner ones off the breast;
4. the largest component that is not a flat bright strip is the breast, and every component at least
   a tenth of its size joins it (thin strips, text and markers are small or thin, so they never do;
   a strip as large as the breast stays too: when unsure, tissue is never dropped); a closing and a
   hole fill then make the chosen components one object, lobular fat included.

Masking is conservative: :func:`apply_mask` zeroes only bright objects that are isolated from the
breast (labels, markers, strips not touching it); faint tissue below the threshold is never zeroed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from .film_artefacts import film_artefacts, strip_like, unpadded, very_bright

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]
NOISE_SIGMAS = 4.0          # threshold = background + NOISE_SIGMAS * noise sigma
MIN_CONTRAST = 0.004        # ... and at least this far above the background level (display units)
JOIN_FRACTION = 0.10        # components at least this share of the largest one are breast too
OPEN_FRACTION = 0.02        # opening kernel / work size: wider than a detector strip or a label stroke
CLOSE_FRACTION = 0.04       # closing kernel / work size: joins lobular fat islands into one object
WORK_PX = 384               # long side of the segmentation copy
AIR_MIN = 0.02              # no side is air when this share of the image is darker than the sides' level ...
AIR_GAP = 0.05              # ... by this much (display units): air is the darkest thing on a mammogram


@dataclass
class Segmentation:
    """Breast mask and the isolated bright objects to remove, on a downsampled copy (``scale`` < 1)."""

    breast: np.ndarray      # bool, the breast as one object (holes filled)
    remove: np.ndarray      # bool, bright objects isolated from the breast: labels, markers, strips
    scale: float            # work pixels per image pixel
    background: float
    noise: float
    threshold: float

    @property
    def found(self) -> bool:
        return bool(self.breast.any()) and self.breast.sum() >= 0.005 * self.breast.size


def _odd(n: float) -> int:
    return max(3, int(round(n)) | 1)


def _morph(mask: np.ndarray, op: int, k: int) -> np.ndarray:
    """Opening, closing or dilation with an elliptic kernel, padding with background so the border acts as air.

    Only the objects' bounding box grown by ``k`` can change, so only it is filtered (the closing
    of a breast mask then costs about half)."""
    x, y, w, h = cv2.boundingRect(mask)
    padded = cv2.copyMakeBorder(mask, k, k, k, k, cv2.BORDER_CONSTANT, value=0)
    out = np.zeros_like(padded)
    if w:  # no object: opening, closing and dilation keep it empty
        box = (slice(y, y + h + 2 * k), slice(x, x + w + 2 * k))  # the objects' box grown by k, padded coordinates
        out[box] = cv2.morphologyEx(padded[box], op, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return out[k:-k, k:-k]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Holes (background not reachable from outside the image) filled in a uint8 mask."""
    padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    flood = padded.copy()
    cv2.floodFill(flood, np.zeros((flood.shape[0] + 2, flood.shape[1] + 2), np.uint8), (0, 0), 1)
    holes = flood[1:-1, 1:-1] == 0
    return (mask.astype(bool) | holes).astype(np.uint8)


def background_model(small: np.ndarray, border_frac: float = 0.03) -> tuple[float, float]:
    """(background level, noise sigma) from the darkest side of the image border.

    Each side's band gives a level (its lower quartile) and a noise sigma (1.4826 x the median
    deviation of its values below the median). The side with the lowest level is air in any
    mammogram: the chest wall, a breast touching an edge, or a detector strip only raise a side.
    On a tie (a clipped window puts air at exactly 0) the quieter side wins: a side that is part
    air, part breast has the same lower quartile as pure air but a much larger spread.

    A breast can fill a film to its top, bottom and chest wall, with film-holder strips on the far side:
    then no side is air, and a level taken from tissue would drop the breast and keep the strips. Air
    is the darkest thing on a mammogram, so when ``AIR_MIN`` of the image lies ``AIR_GAP`` below the
    sides' level, that dark region is modelled instead.
    """
    h, w = small.shape
    b = max(2, int(round(border_frac * min(h, w))))
    level, noise = min(_level_noise(band.ravel()) for band in (small[:b], small[-b:], small[:, :b], small[:, -b:]))
    dark = small[small < level - AIR_GAP]
    if dark.size >= AIR_MIN * small.size:
        return _level_noise(dark)
    return level, noise


def _level_noise(v: np.ndarray) -> tuple[float, float]:
    """(lower quartile, noise sigma) of background values: 1.4826 x the median deviation of the values
    below the median from the quartile."""
    level, median = np.percentile(v, np.array([25, 50], v.dtype))  # one sort; dtype kept
    low = v[v <= median]
    return float(level), 1.4826 * float(np.median(np.abs(low - level)))


def segment_breast(img: np.ndarray, work_px: int = WORK_PX) -> Segmentation:
    """Segment the breast on a downsampled copy; see the module docstring for the method."""
    if img.ndim != 2 or img.size == 0:
        raise ValueError(f"segment_breast expects a non-empty 2-D array, got shape {img.shape}")
    h, w = img.shape
    s = work_px / max(h, w)  # small images are enlarged: the kernels below are fractions of the work size
    resized = cv2.resize(np.ascontiguousarray(img, dtype=np.float32), (max(1, round(w * s)), max(1, round(h * s))),
                         interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    small = cv2.GaussianBlur(resized, (3, 3), 0)
    level, noise = background_model(small[unpadded(small)])
    thr = level + max(NOISE_SIGMAS * noise, MIN_CONTRAST)
    raw = (small > thr).astype(np.uint8)
    bright = very_bright(small, level)
    strips, labels_rulers = film_artefacts(small, level, raw, unpadded(resized), bright)  # film edges: before the blur
    raw[strips | labels_rulers] = 0
    long_side = max(small.shape)
    k_open, k_close = _odd(OPEN_FRACTION * long_side), _odd(CLOSE_FRACTION * long_side)
    opened = _morph(raw, cv2.MORPH_OPEN, k_open)
    n, labels = cv2.connectedComponents(opened, connectivity=8)  # (areas by bincount: 5x faster than WithStats)
    breast = np.zeros(small.shape, bool)
    if n > 1:
        areas = np.bincount(labels.ravel(), minlength=n)[1:]
        tissue = ~strip_like(small, bright, labels, areas)
        ref = areas[tissue].max() if tissue.any() else areas.max()  # a strip never sets the breast's size ...
        chosen = np.zeros(n, np.uint8)
        chosen[1:] = areas >= JOIN_FRACTION * ref  # ... and one as large as the breast stays: unclear, keep both
        # components are chosen before closing, so a label near the breast is never bridged onto it
        breast = fill_holes(_morph(np.take(chosen, labels), cv2.MORPH_CLOSE, k_close)) > 0
    # Objects of the raw mask that do not touch the (slightly grown) breast are certainly not breast.
    near = _morph(breast.view(np.uint8), cv2.MORPH_DILATE, k_close)
    n_raw, raw_labels = cv2.connectedComponents(raw, connectivity=8)
    touching = np.bincount(raw_labels[near > 0], minlength=n_raw) > 0
    touching[0] = True  # label 0 is the background
    remove = np.zeros(small.shape, bool)
    if not touching.all():  # something isolated: a label, marker or strip
        remove = ~np.take(touching, raw_labels)
        remove = cv2.dilate(remove.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # antialiased stroke edges
        remove &= near == 0
    remove |= labels_rulers & ~breast  # strips only leave the box: one may run over tissue it hides
    return Segmentation(breast, remove, s, level, noise, thr)


def box_from_mask(mask: np.ndarray, scale: float, shape, margin: float = 0.01) -> Box:
    """Image-pixel box around a work-scale mask, grown by ``margin`` of the image size on each side."""
    h, w = shape
    if not mask.any() or mask.sum() < 0.005 * mask.size:
        log.warning("breast_bbox: no breast found in a %dx%d image; using the full image", h, w)
        return (0, 0, h, w)
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    my, mx = margin * h, margin * w
    y0 = int(np.floor(ys[0] / scale - my))
    y1 = int(np.ceil((ys[-1] + 1) / scale + my))
    x0 = int(np.floor(xs[0] / scale - mx))
    x1 = int(np.ceil((xs[-1] + 1) / scale + mx))
    return (max(0, y0), max(0, x0), min(h, y1), min(w, x1))


def breast_bbox(img: np.ndarray, margin: float = 0.01, work_px: int = WORK_PX) -> Box:
    """Box ``(y0, x0, y1, x1)`` around the whole breast (skin line, nipple, pectoral muscle included).

    The box is grown by ``margin`` of the image size on each side. If no breast is found (blank or
    constant image) the full image is returned with a warning; a valid image never raises.
    """
    seg = segment_breast(img, work_px)
    return box_from_mask(seg.breast, seg.scale, img.shape, margin)


def apply_mask(img: np.ndarray, seg: Segmentation) -> np.ndarray:
    """Zero the bright objects isolated from the breast (burned-in labels, markers, strips); nothing else."""
    if not seg.remove.any():
        return img
    h, w = img.shape
    remove = mask_on_output(seg.remove, (h, w), (0, 0, h, w), (h, w))  # as preprocessing maps it
    out = img.copy()
    out[remove] = 0.0
    return out


def mask_on_output(mask: np.ndarray, image_shape: tuple[int, int], box: Box, shape: tuple[int, int]) -> np.ndarray:
    """A mask over a whole image (at any scale) as a bool mask over ``box`` resized to ``shape``."""
    m = mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8)
    if m.shape != tuple(image_shape):
        m = cv2.resize(m, (image_shape[1], image_shape[0]), interpolation=cv2.INTER_NEAREST)
    return cv2.resize(np.ascontiguousarray(crop(m, box)), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0


def crop(img: np.ndarray, box: Box) -> np.ndarray:
    """Slice ``img`` to ``box`` (a view, no copy)."""
    y0, x0, y1, x1 = box
    if not (0 <= y0 < y1 <= img.shape[0] and 0 <= x0 < x1 <= img.shape[1]):
        raise ValueError(f"box {box} is empty or outside an image of shape {img.shape}")
    return img[y0:y1, x0:x1]


def orient(img: np.ndarray, laterality: str | None = None) -> tuple[np.ndarray, bool]:
    """Flip horizontally so the chest wall is on the left. Returns (image, flipped).

    The side is measured from the pixels (machines do not all follow the display convention); the
    laterality is only a tie-breaker for a symmetric image (R breasts then get flipped).
    """
    half = img.shape[1] // 2
    left, right = cv2.sumElems(img[:, :half])[0], cv2.sumElems(img[:, img.shape[1] - half:])[0]  # 10x numpy's sum
    if abs(left - right) <= 1e-3 * max(left + right, 1e-9):
        flip = (laterality or "L").upper().startswith("R")
    else:
        flip = right > left
    return (cv2.flip(img, 1) if flip else img), flip


def fit_shape(shape: tuple[int, int], size: tuple[int, int], keep_aspect: bool = True) -> tuple[int, int]:
    """(H, W) an image of ``shape`` is resized to before padding to ``size``: fitted inside it with
    ``keep_aspect``, else ``size`` itself."""
    th, tw = size
    if not keep_aspect:
        return th, tw
    h, w = shape
    s = min(th / h, tw / w)
    return max(1, min(th, round(h * s))), max(1, min(tw, round(w * s)))


def area_shrink(img: np.ndarray, f: int) -> np.ndarray:
    """Average ``f x f`` blocks; the last ``h % f`` rows and ``w % f`` columns are dropped so the
    factor is exact. Even factors go by halvings: OpenCV vectorises only its 2x area path, and two
    halvings take 0.4 ms where one 4x step takes 1.1 ms on a 1664x1280 image (integer results are
    rounded at each step: at most one stored value apart)."""
    h, w = img.shape[0] // f * f, img.shape[1] // f * f
    img = img[:h, :w]
    while f % 2 == 0:
        img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
        f //= 2
    if f == 1:
        return img
    return cv2.resize(img, (img.shape[1] // f, img.shape[0] // f), interpolation=cv2.INTER_AREA)


def resize(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize to ``shape`` (H, W). Shrinking averages integer blocks first (OpenCV's fast exact-factor
    area path), then interpolates bilinearly by the remaining factor (< 2), at a fifth of the cost of
    a non-integer area resize. The two agree inside the breast; at sharp edges (skin line, markers)
    they differ by 13-15 levels of 255 at the 99.9th percentile on real-size files (mean 0.16-0.19;
    benchmarks/preprocess.py --tolerance). Enlarging is bilinear.

    Integer stored values stay integers (uint8, uint16, int16); other types are resized as float32."""
    if img.dtype not in (np.uint8, np.uint16, np.int16, np.float32):
        img = img.astype(np.float32)
    h, w = shape
    if (h, w) == img.shape:
        return np.ascontiguousarray(img)
    f = int(min(img.shape[0] / h, img.shape[1] / w))
    if f >= 2:
        img = area_shrink(img, f)
    if (h, w) == img.shape:
        return img
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


def pad_to(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Place ``img`` top-left on a zero canvas of ``size`` (H, W), so the chest wall stays on the left edge."""
    out = np.zeros(size, dtype=img.dtype)
    out[:img.shape[0], :img.shape[1]] = img
    return out


def resize_pad(img: np.ndarray, size: tuple[int, int], keep_aspect: bool = True) -> np.ndarray:
    """Resize to ``size`` (H, W). With ``keep_aspect`` the image is scaled to fit and padded with 0
    at the bottom/right (top-left anchored, so the chest wall stays on the left edge)."""
    return pad_to(resize(img, fit_shape(img.shape, size, keep_aspect)), size)

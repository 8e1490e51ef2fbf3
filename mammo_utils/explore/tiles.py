"""One view's pixels as the browsers show them: decoded at screen size, windowed, letterboxed into a
tile, or a tile that says why the view cannot be shown. Pure numpy/OpenCV, no widgets."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..dicom.lut import Window

STANDARD_VIEWS = [("L", "CC"), ("R", "CC"), ("L", "MLO"), ("R", "MLO")]
MODES = ("read", "stored", "preprocessed")
FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
COLORS = {"box": (255, 60, 60), "mask": (60, 220, 60), "lesion": (255, 220, 0)}  # RGB


@dataclass
class ViewState:
    """Display settings of one view: which pixels, which window, what is drawn on top."""

    mode: str = "read"
    window: Window | None = None        # None: the header's first window (or min-max)
    extra: dict = field(default_factory=dict)


def in_widget_frontend() -> bool:
    """True inside JupyterLab / Notebook (their server names the kernel's session); False under papermill."""
    if os.environ.get("MAMMO_VIEWER_STATIC"):
        return False
    return bool(os.environ.get("JPY_SESSION_NAME"))


def read_stored_view(path, display_px: int):
    """Decode at the screen size through the read path training uses (:func:`read_stored_image`: VOI
    LUT Sequence, windows, MONOCHROME1, padding), keeping the stored values whole so that a window
    change is one table lookup."""
    from ..dicom.read import read_stored_image

    return read_stored_image(path, min_size=(display_px, display_px // 2), clamp=False)


def display_image(v, mode: str, window: Window | None) -> np.ndarray:
    """float32 [0, 1] image of a cached view: as stored (min-max, no inversion) or as read (the header's
    display, exactly what preprocessing applies, or ``window`` in its place), padding as background."""
    from ..dicom.lut import apply_display

    if mode == "stored":
        return apply_display(v.stored)[0]
    img = (v.display if window is None else v.with_window(window))(v.stored)
    if v.pad_mask is not None:
        img[v.pad_mask] = 0.0
    return img


class ViewUnavailable(Exception):
    """A view that cannot be shown; its tile says why."""


def placeholder(height: int, width: int, reason: str) -> np.ndarray:
    """A dark tile that says why its view cannot be shown (the reason wrapped over a few lines)."""
    import textwrap

    tile = np.full((height, width, 3), 48, np.uint8)
    cv2.putText(tile, "cannot show this view:", (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 120, 120), 1, cv2.LINE_AA)
    for k, line in enumerate(textwrap.wrap(reason, max(10, width // 8))[:8]):
        cv2.putText(tile, line, (6, 44 + 18 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (230, 230, 230), 1, cv2.LINE_AA)
    return tile


def to_rgb(img: np.ndarray) -> np.ndarray:
    g = np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def fit_tile(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Letterbox an RGB image into a tile of ``height x width`` (top-left anchored), returning the tile."""
    h, w = rgb.shape[:2]
    s = min(height / h, width / w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    tile = np.zeros((height, width, 3), np.uint8)
    tile[:nh, :nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    return tile

"""Drawing one synthetic mammogram: breast anatomy, lesions and benign mimics, and the machines that
store it (bit depth, photometric, transfer syntax, window, burned-in labels, edge strips, padding).

Pure functions of a numpy random generator: the same seed draws the same image, so the exact tissue
mask of any planned image can be re-rendered (:func:`truth_mask`).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Machine:
    """One acquisition device with the traits the real RSNA machines show."""

    machine_id: int
    site_id: int
    photometric: str      # MONOCHROME1: white background in stored values
    bits: int             # BitsStored
    syntax: str           # key of mammo_utils.dicom.TRANSFER_SYNTAXES
    voi: str              # LINEAR | LINEAR_EXACT | SIGMOID | none
    n_windows: int = 1    # multi-valued WindowCenter/WindowWidth
    label: bool = False   # burned-in "L-CC" text
    edge: bool = False    # bright detector edge strip
    padding: bool = False  # PixelPaddingValue on the background
    intercept: float = 0.0
    aspect: float = 1.25  # rows / columns
    scale: float = 1.0    # relative image height
    test_only: bool = False


MACHINES = (
    Machine(49, 1, "MONOCHROME2", 12, "j2k", "LINEAR", n_windows=3, label=True, aspect=1.30),
    Machine(48, 1, "MONOCHROME1", 16, "j2k", "SIGMOID", n_windows=4, padding=True, aspect=1.23, scale=1.1),
    Machine(29, 2, "MONOCHROME2", 10, "jpeg_lossless", "LINEAR", edge=True, aspect=1.33, scale=0.9),
    Machine(21, 2, "MONOCHROME1", 12, "jpeg_lossless", "LINEAR", intercept=100.0, aspect=1.20),
    Machine(93, 1, "MONOCHROME2", 14, "rle", "none", edge=True, aspect=1.09, scale=1.15),
    Machine(216, 2, "MONOCHROME2", 12, "explicit", "LINEAR", label=True, aspect=1.33, scale=0.85),
    Machine(190, 1, "MONOCHROME2", 14, "j2k", "LINEAR_EXACT", aspect=1.25, test_only=True),
)
MACHINE_WEIGHTS = {49: 0.30, 48: 0.15, 29: 0.15, 21: 0.10, 93: 0.15, 216: 0.15}


def smooth_noise(rng: np.random.Generator, shape, cells: int) -> np.ndarray:
    """Band-limited noise in about [-1, 1]: random grid of ``cells`` rows, upsampled bicubically."""
    h, w = shape
    gh, gw = max(2, cells), max(2, round(cells * w / h))
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC) / 1.5


def draw_breast(rng: np.random.Generator, shape, view: str, density: float, breast: dict):
    """Attenuation map in [0, 1] (0 = air) and the tissue mask for one view of one breast.

    The hard-anatomy keys of ``breast`` (all optional) make the cases a crop must survive:
    ``edge`` (attenuation at the skin: low for fatty breasts fading towards the background),
    ``lobular`` (strength of dark fat lobules), ``pect_gain`` (pectoral brightness), ``fold``
    (a skin fold), ``nipple`` (nipple in profile).
    """
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = xx / w, yy / h
    mlo = view in ("MLO", "ML", "LMO")
    ax = breast["depth"] * (1.08 if mlo else 1.0)
    by = breast["height"] * (1.35 if mlo else 1.0)
    cy = breast["cy"] - (0.08 if mlo else 0.0)
    wobble = 1.0 + 0.04 * smooth_noise(rng, shape, 3)
    r = np.sqrt((u / ax) ** 2 + ((v - cy) / by) ** 2) * wobble
    mask = r < 1.0
    thickness = np.sqrt(np.clip(1.0 - r ** 2, 0.0, 1.0))
    texture = 0.6 * smooth_noise(rng, shape, 12) + 0.4 * smooth_noise(rng, shape, 40)
    glandular = np.clip(density + 0.35 * texture - 0.45 * r ** 2, 0.0, 1.0)
    edge = breast.get("edge", 0.30)
    a = edge + 0.30 * thickness + 0.30 * glandular
    if breast.get("lobular"):                              # dark fat lobules down towards the skin level
        lobules = np.clip(smooth_noise(rng, shape, 28) * 2.0, 0.0, 1.0)
        a = a - breast["lobular"] * lobules * (a - 0.75 * edge)
    a += 0.06 * ((r > 0.975) & mask)                      # skin line
    if breast.get("fold"):                                # skin fold: a bright band along the lower skin line
        a += 0.08 * ((r > 0.90) & (r < 0.95) & (v > cy) & mask)
    if breast.get("nipple"):                              # nipple in profile, on the skin line
        row = mask[min(h - 1, max(0, int(cy * h)))]
        tip = (np.flatnonzero(row).max() + 1) / w if row.any() else ax
        nip = ((u - tip) / 0.03) ** 2 + ((v - cy) / 0.025) ** 2 < 1.0
        a = np.where(nip & ~mask, edge + 0.08, a)
        mask |= nip
    if mlo:                                               # pectoral muscle: top-left triangle
        pu, pv = breast["pect_u"], breast["pect_v"]
        pect = (u / pu + v / pv) < 1.0
        a = np.where(pect, np.minimum(a + breast.get("pect_gain", 0.22), 0.97), a)
        mask |= pect
    if breast["implant"]:
        imp = ((u - 0.25 * ax) / (0.22 * ax)) ** 2 + ((v - cy) / (0.45 * by)) ** 2 < 1.0
        a = np.where(imp & mask, 0.96, a)
    return np.where(mask, np.clip(a, 0.0, 1.0), 0.0).astype(np.float32), mask


def lesion_position(shape, view: str, breast: dict) -> tuple[float, float]:
    """Lesion centre (y, x) in pixels: the same depth from the chest wall in every view."""
    h, w = shape
    mlo = view in ("MLO", "ML", "LMO")
    ax = breast["depth"] * (1.08 if mlo else 1.0)
    by = breast["height"] * (1.35 if mlo else 1.0)
    cy = breast["cy"] - (0.08 if mlo else 0.0)
    f, g = breast["lesion_f"], breast["lesion_g"]
    u = f * ax
    v = cy + g * by * np.sqrt(1.0 - f ** 2) * 0.7
    if mlo:
        v = np.clip(v, 0.30, 0.90)  # keep clear of the pectoral muscle
    return float(v * h), float(u * w)


def draw_lesion(rng, a: np.ndarray, mask: np.ndarray, center, radius_px: float, contrast: float, calcs: bool,
                mass: bool = True, smooth: bool = False):
    """Add a mass (Gaussian-profile blob, irregular edge unless ``smooth``) and/or a calcification cluster.

    A benign mimic is a smooth round mass; a calcification-only cancer has ``mass=False``.
    """
    h, w = a.shape
    cy, cx = center
    out = a.copy()
    if mass:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        d = np.sqrt(((yy - cy) ** 2 + (xx - cx) ** 2)) / radius_px
        if not smooth:
            d = d * (1.0 + 0.2 * smooth_noise(rng, a.shape, 24))     # irregular (spiculated-like) margin
        blob = contrast / (1.0 + np.exp(np.minimum((d - 1.0) * 5.0, 50.0)))  # dense core with a soft edge
        out = out + blob * mask
    if calcs:
        for _ in range(int(rng.integers(5, 12))):
            dy, dx = rng.normal(0, radius_px * 0.8, 2)
            y, x = int(round(cy + dy)), int(round(cx + dx))
            if 0 <= y < h and 0 <= x < w and mask[y, x]:
                cv2.circle(out, (x, y), max(1, int(round(radius_px * 0.08))), float(min(1.0, out[y, x] + 0.35)), -1)
    return np.clip(out, 0.0, 1.0)


def draw_vascular_calcs(rng, a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Benign vascular calcifications: a line of bright dots along a vessel (a mimic of a cluster)."""
    h, w = a.shape
    out = a.copy()
    y0, x0 = rng.uniform(0.3, 0.7) * h, rng.uniform(0.1, 0.4) * w
    angle = rng.uniform(-0.5, 0.5)
    for t in np.linspace(0, 0.5 * w, 14):
        y, x = int(y0 + t * np.sin(angle)), int(x0 + t * np.cos(angle))
        if 0 <= y < h and 0 <= x < w and mask[y, x]:
            cv2.circle(out, (x, y), max(1, h // 300), float(min(1.0, out[y, x] + 0.3)), -1)
    return out


def to_stored(a: np.ndarray, machine: Machine, rng: np.random.Generator):
    """Map attenuation to stored values and return them with the VOI attributes that display them."""
    top = 2 ** machine.bits - 1
    bg = 0.04 * top
    span = 0.80 * top
    x = bg + a * span + rng.normal(0, 0.004 * span, a.shape).astype(np.float32)
    center, width = bg + 0.55 * span, 1.0 * span
    attrs = {}
    if machine.photometric == "MONOCHROME1":
        x = top - x
        center = top - center
    x = np.clip(np.rint(x), 0, top)
    if machine.padding:
        pad = top if machine.photometric == "MONOCHROME1" else 0
        x[a <= 0] = pad
        attrs["PixelPaddingValue"] = pad
    stored = x.astype(np.uint16)
    # Window is expressed in Modality LUT output units: stored + intercept.
    center += machine.intercept
    if machine.intercept:
        attrs["RescaleIntercept"] = machine.intercept
        attrs["RescaleSlope"] = 1
        attrs["RescaleType"] = "US"
    if machine.voi != "none":
        centers = [round(center, 1)] + [round(center * f, 1) for f in (0.9, 1.1, 0.8)][: machine.n_windows - 1]
        widths = [round(width, 1)] * machine.n_windows if machine.n_windows == 4 else \
            [round(width, 1)] + [round(width * f, 1) for f in (0.7, 0.5)][: machine.n_windows - 1]
        attrs["WindowCenter"] = centers if len(centers) > 1 else centers[0]
        attrs["WindowWidth"] = widths if len(widths) > 1 else widths[0]
        attrs["VOILUTFunction"] = machine.voi
    return stored, attrs


def burn_in(stored: np.ndarray, machine: Machine, laterality: str, view: str) -> np.ndarray:
    """Burned-in label and detector-edge strip, at the brightest displayed value."""
    top = 2 ** machine.bits - 1
    bright = 0 if machine.photometric == "MONOCHROME1" else top
    h, w = stored.shape
    if machine.label:
        scale = h / 420.0
        thick = max(1, round(h / 300))
        (tw, th), _ = cv2.getTextSize(f"{laterality}-{view}", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        x = w - tw - w // 25 if laterality == "L" else w // 25
        text = np.zeros(stored.shape, np.uint8)
        cv2.putText(text, f"{laterality}-{view}", (x, th + h // 30), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thick)
        stored[text > 0] = bright
    if machine.edge:
        strip = max(2, h // 160)
        stored[:strip, :] = bright
        if laterality == "L":
            stored[:, w - strip:] = bright
        else:
            stored[:, :strip] = bright
    return stored


def breast_params(rng, density: float, implant: bool, anatomy: str = "default", lesions: str = "default") -> dict:
    """Shape, lesion and (optionally) hard-anatomy parameters of one breast, drawn from ``rng``."""
    p = dict(
        depth=rng.uniform(0.50, 0.80), height=rng.uniform(0.30, 0.42), cy=rng.uniform(0.46, 0.56),
        pect_u=rng.uniform(0.22, 0.40), pect_v=rng.uniform(0.35, 0.65), density=density, implant=implant,
        lesion_f=rng.uniform(0.30, 0.70), lesion_g=rng.uniform(-0.6, 0.6), lesion_r=rng.uniform(0.03, 0.055),
        calcs=bool(rng.random() < 0.5),
    )
    if anatomy == "hard":
        kind = rng.choice(["fatty", "fatty_lobular", "dense", "wide_pectoral", "touching"])
        p.update(fold=bool(rng.random() < 0.4), nipple=bool(rng.random() < 0.5))
        if kind in ("fatty", "fatty_lobular"):
            p.update(edge=rng.uniform(0.08, 0.12), density=0.02, lobular=0.8 if kind == "fatty_lobular" else 0.0)
        elif kind == "dense":
            p.update(density=0.9)
        elif kind == "wide_pectoral":
            p.update(pect_u=rng.uniform(0.40, 0.60), pect_v=rng.uniform(0.6, 0.9), pect_gain=0.45,
                     edge=rng.uniform(0.10, 0.16), density=0.05)
        else:  # touching the top or bottom edge
            p.update(height=rng.uniform(0.48, 0.58), cy=rng.choice([0.40, 0.60]))
        p["anatomy"] = kind
    if lesions == "hard":
        # small masses; a fifth are calcifications only; a fifth show in one view only; 12 % benign mimics
        p.update(lesion_r=rng.uniform(0.03, 0.05), lesion_mass=bool(rng.random() > 0.2),
                 lesion_view=rng.choice(["CC", "MLO"]) if rng.random() < 0.2 else None,
                 mimic=rng.choice(["mass", "vascular", None], p=[0.07, 0.05, 0.88]))
    return p


def truth_mask(spec: dict) -> np.ndarray:
    """Re-render the exact tissue mask of one planned image (for crop-quality checks)."""
    rng = np.random.default_rng(spec["seed"])
    _, mask = draw_breast(rng, spec["shape"], spec["view"], spec["breast"]["density"], spec["breast"])
    return mask[:, ::-1] if spec["laterality"] == "R" else mask

"""Synthetic screening mammograms in the exact RSNA competition layout (the embedded default data).

Why: the real Kaggle data cannot be shipped or downloaded, yet every code path (MONOCHROME1/2,
10-16 bit, J2K / JPEG Lossless / RLE / native, LINEAR/SIGMOID/multi-valued windows, no window,
burned-in labels, detector edge strips, pectoral muscle, implants) must run on something, and a
model must have a signal to learn. Cancer breasts carry a mass (and sometimes a calcification
cluster) at the same depth in CC and MLO, with a configurable contrast.

Layout written under ``out``::

    train.csv  test.csv  sample_submission.csv  synthetic_truth.csv
    train_images/<patient_id>/<image_id>.dcm    test_images/<patient_id>/<image_id>.dcm

``synthetic_truth.csv`` is the side file with per-image ground truth (breast box, lesion centre,
test labels); ``train.csv`` keeps exactly the RSNA columns.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)
MIN_SYNTH_PX = 64

from .errors import UserError
from .paths import parse_size
from .tables import TEST_COLUMNS, TRAIN_COLUMNS


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


# --------------------------------------------------------------------------------------------------
# Anatomy (pure numpy; breast on the left, chest wall at x = 0, as for a left breast)
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# One image (runs in a worker process)
# --------------------------------------------------------------------------------------------------

def make_image(spec: dict) -> dict:
    """Render, encode and write one DICOM; return its ground-truth row."""
    from .dicom import write_dicom

    rng = np.random.default_rng(spec["seed"])
    machine = next(m for m in MACHINES if m.machine_id == spec["machine_id"])
    shape = spec["shape"]
    breast = spec["breast"]
    a, mask = draw_breast(rng, shape, spec["view"], breast["density"], breast)
    lesion = (np.nan, np.nan)
    visible = spec["cancer"] and breast.get("lesion_view") in (None, spec["view"])
    if visible:
        lesion = lesion_position(shape, spec["view"], breast)
        mass = breast.get("lesion_mass", True)
        a = draw_lesion(rng, a, mask, lesion, breast["lesion_r"] * shape[0], spec["contrast"],
                        breast["calcs"] or not mass, mass=mass)  # a calcification-only cancer has its calcifications
    elif breast.get("mimic") == "mass":
        a = draw_lesion(rng, a, mask, lesion_position(shape, spec["view"], breast), breast["lesion_r"] * shape[0],
                        spec["contrast"], calcs=False, smooth=True)
    elif breast.get("mimic") == "vascular":
        a = draw_vascular_calcs(rng, a, mask)
    if spec["laterality"] == "R":  # right breasts have their chest wall on the right
        a, mask = a[:, ::-1].copy(), mask[:, ::-1].copy()
        lesion = (lesion[0], shape[1] - 1 - lesion[1])
    stored, attrs = to_stored(a, machine, rng)
    stored = burn_in(stored, machine, spec["laterality"], spec["view"])
    ys, xs = np.nonzero(mask)
    attrs.update(
        PatientID=str(spec["patient_id"]), BitsStored=machine.bits, PhotometricInterpretation=machine.photometric,
        SOPInstanceUID=spec["uid"], StudyInstanceUID=spec["study_uid"], SeriesInstanceUID=spec["series_uid"],
        ImageLaterality=spec["laterality"], ViewPosition=spec["view"], Manufacturer=f"SYNTH-{machine.machine_id}",
        PatientAge=f"{int(spec['age']):03d}Y" if spec["age"] == spec["age"] else "", InstanceNumber=1,
        PresentationIntentType="FOR PRESENTATION", BurnedInAnnotation="YES" if machine.label else "NO",
    )
    write_dicom(spec["path"], stored, attrs, machine.syntax, overwrite=False)
    mask_path = Path(spec["mask_path"])
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(mask_path), mask.astype(np.uint8) * 255, [cv2.IMWRITE_PNG_BILEVEL, 1])
    return {
        "image_id": spec["image_id"], "breast_y0": int(ys.min()), "breast_x0": int(xs.min()),
        "breast_y1": int(ys.max()) + 1, "breast_x1": int(xs.max()) + 1, "breast_pixels": int(mask.sum()),
        "lesion_y": lesion[0], "lesion_x": lesion[1],
        "lesion_r": breast["lesion_r"] * shape[0] if visible else np.nan,
        "lesion_kind": ("mass" if breast.get("lesion_mass", True) else "calcifications") if visible else
        (f"benign_{breast['mimic']}" if breast.get("mimic") and not spec["cancer"] else ""),
        "rows": shape[0], "columns": shape[1], "photometric": machine.photometric, "bits_stored": machine.bits,
        "syntax": machine.syntax, "voi": machine.voi,
    }


# --------------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------------

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


PRESETS = {
    # the demo: every code path, lesions a small CNN learns in minutes
    "default": dict(cancer_rate=0.2, lesion_contrast=0.3, anatomy="default", lesions="default", confounder=0.0),
    # the benchmark: fainter masses, calcification-only and one-view cancers, benign mimics, dense
    # breasts that hide lesions, and machine 49 with three times the cancer rate of the others
    # (the hard *anatomy* is a separate option, `anatomy="hard"`, for the crop tests)
    "hard": dict(cancer_rate=0.20, lesion_contrast=0.12, anatomy="default", lesions="hard", confounder=3.0),
}


def plan_dataset(patients: int, test_patients: int, seed: int, size=(640, 512), cancer_rate: float = 0.2,
                 lesion_contrast: float = 0.3, anatomy: str = "default", lesions: str = "default",
                 confounder: float = 0.0) -> list[dict]:
    """Every image to write, with all randomness drawn here from one seeded generator."""
    from .dicom import make_uid

    rng = np.random.default_rng(seed)
    n_total = patients + test_patients
    patient_ids = rng.choice(np.arange(10_000, 65_535), size=n_total, replace=False)
    # At most 6 images per patient; unique random ids in the range the real image_ids use.
    image_ids = iter(rng.permutation(np.unique(rng.integers(10_000_000, 2_147_000_000, size=n_total * 8))))
    train_machines = [m for m in MACHINES if not m.test_only]
    weights = np.array([MACHINE_WEIGHTS[m.machine_id] for m in train_machines])
    specs = []
    for i, pid in enumerate(patient_ids):
        split = "train" if i < patients else "test"
        pool = MACHINES if split == "test" else train_machines
        p = np.append(weights, 0.15) if split == "test" else weights
        machine = pool[rng.choice(len(pool), p=p / p.sum())]
        age = float(rng.integers(38, 89)) if rng.random() > 0.02 else np.nan
        density_cat = rng.choice(["A", "B", "C", "D"], p=[0.1, 0.45, 0.38, 0.07])
        density = {"A": 0.1, "B": 0.3, "C": 0.55, "D": 0.8}[density_cat]
        implant = bool(rng.random() < 0.03)
        # confounder > 0: machine 49 (site 1) has that many times the cancer rate of the other machines
        rate = cancer_rate * (confounder if machine.machine_id == 49 else 1.0) / (1.0 + (confounder - 1) * 0.3) \
            if confounder else cancer_rate
        cancer_side = rng.choice(["L", "R"]) if rng.random() < rate else None
        difficult = cancer_side is None and rng.random() < 0.08
        jitter = machine.scale * rng.uniform(0.95, 1.05)
        shape = (int(round(size[0] * jitter)), int(round(size[1] * jitter * 1.25 / machine.aspect)))
        study_uid = make_uid(seed, pid, "study")
        for lat in ("L", "R"):
            breast = breast_params(rng, density, implant, anatomy, lesions)
            cancer = int(cancer_side == lat)
            views = ["CC", "MLO"] + ([rng.choice(["MLO", "CC", "AT", "LM", "ML", "LMO"])] if rng.random() < 0.12 else [])
            for view in views:
                iid = int(next(image_ids))
                specs.append(dict(
                    split=split, site_id=machine.site_id, patient_id=int(pid), image_id=iid, laterality=lat,
                    view=view, age=age, cancer=cancer, biopsy=int(cancer or difficult),
                    invasive=int(cancer and rng.random() < 0.7),
                    BIRADS=(0 if cancer and rng.random() < 0.6 else np.nan) if cancer else
                    rng.choice([1.0, 2.0, 0.0, np.nan], p=[0.55, 0.2, 0.05, 0.2]),
                    implant=int(implant), density=density_cat if rng.random() > 0.3 else np.nan,
                    machine_id=machine.machine_id, difficult_negative_case=bool(difficult),
                    shape=shape, breast=breast, contrast=lesion_contrast, seed=int(rng.integers(2 ** 31)),
                    uid=make_uid(seed, iid), study_uid=study_uid,
                    series_uid=make_uid(seed, iid, "series"),
                ))
    return specs


def default_test_patients(patients: int) -> int:
    """Size of the labelled held-out set: chosen for the estimate, not for training. As many patients
    as training, at most 200 (~400 breasts, ~35 cancers at the default rate: a chance-level AUC then
    has a standard error of ~0.05, so a shuffled-label control reads as chance)."""
    return max(2, min(int(patients), 200))


def write_dataset(out, patients: int = 200, seed: int = 0, size=(640, 512), test_patients: int | None = None,
                  cancer_rate: float | None = None, lesion_contrast: float | None = None, jobs: int = -1,
                  progress: bool = True, preset: str = "default", anatomy: str | None = None) -> pd.DataFrame:
    """Write the whole synthetic dataset; deterministic for a seed. Returns the truth table.

    Only into a folder that is missing or empty: the generator never overwrites a file.
    """
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    from .tables import with_prediction_id

    out = Path(out)
    check_synthetic_target(out)
    if int(patients) < 2:
        raise UserError(f"patients must be at least 2 (one per split of a fold), got {patients}")
    size = parse_size(size)
    if min(size) < MIN_SYNTH_PX:
        raise UserError(f"synthetic images must be at least {MIN_SYNTH_PX}x{MIN_SYNTH_PX}, got {size[0]}x{size[1]}")
    if test_patients is None:
        test_patients = default_test_patients(patients)
    if int(test_patients) < 1:
        raise UserError(f"test_patients must be at least 1, got {test_patients}")
    out.mkdir(parents=True, exist_ok=True)
    if preset not in PRESETS:
        raise UserError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    knobs = {**PRESETS[preset]}
    if cancer_rate is not None:
        knobs["cancer_rate"] = cancer_rate
    if lesion_contrast is not None:
        knobs["lesion_contrast"] = lesion_contrast
    if anatomy is not None:
        knobs["anatomy"] = anatomy
    specs = plan_dataset(patients, test_patients, seed, size, **knobs)
    for s in specs:
        s["path"] = str(out / f"{s['split']}_images" / str(s["patient_id"]) / f"{s['image_id']}.dcm")
        s["mask_path"] = str(truth_mask_path(out, s["patient_id"], s["image_id"]))
    it = tqdm(specs, desc="synth", unit="img", disable=not progress)
    from .parallel import resolve_jobs, shutdown_local_pool

    try:
        truth = Parallel(n_jobs=resolve_jobs(jobs), batch_size=8)(delayed(make_image)(s) for s in it)
    finally:
        shutdown_local_pool()

    table = pd.DataFrame([{k: v for k, v in s.items() if k not in ("shape", "breast", "path", "mask_path", "uid",
                                                                    "study_uid", "series_uid", "contrast", "seed")}
                          for s in specs])
    train = table[table.split == "train"][TRAIN_COLUMNS]
    _write_new_csv(train, out / "train.csv")
    test = with_prediction_id(table[table.split == "test"])
    _write_new_csv(test[TEST_COLUMNS], out / "test.csv")
    sub = pd.DataFrame({"prediction_id": test.prediction_id.drop_duplicates(), "cancer": 0.0})
    _write_new_csv(sub, out / "sample_submission.csv")
    truth = table[["split", "patient_id", "image_id", "laterality", "view", "machine_id", "cancer"]].merge(
        pd.DataFrame(truth), on="image_id")
    _write_new_csv(truth, out / "synthetic_truth.csv")
    return truth


def truth_mask_path(data, patient_id, image_id) -> Path:
    """The generator's side file: the exact tissue mask of one image (bi-level PNG, 255 = breast)."""
    return Path(data) / "synthetic_masks" / str(patient_id) / f"{image_id}.png"


def read_truth_mask(data, patient_id, image_id) -> np.ndarray:
    m = cv2.imread(str(truth_mask_path(data, patient_id, image_id)), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise FileNotFoundError(f"no tissue mask for image {image_id} under {data}/synthetic_masks")
    return m > 0


def check_synthetic_target(out: Path) -> None:
    """Synthetic data goes only into a missing or empty folder; anything else is the user's data."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        held = sorted(p.name for p in out.iterdir())[:5] if out.is_dir() else [out.name]
        raise UserError(f"{out} is not empty (holds {', '.join(held)}{', ...' if len(held) == 5 else ''}) and has no "
                        f"train.csv: refusing to write synthetic data into it. Point --data at an RSNA folder with "
                        f"train.csv, or at a new or empty folder to get the synthetic default")


def _write_new_csv(df: pd.DataFrame, path: Path) -> None:
    with open(path, "x", newline="") as f:  # "x": never overwrite
        df.to_csv(f, index=False)


def truth_mask(spec: dict) -> np.ndarray:
    """Re-render the exact tissue mask of one planned image (for crop-quality checks)."""
    rng = np.random.default_rng(spec["seed"])
    _, mask = draw_breast(rng, spec["shape"], spec["view"], spec["breast"]["density"], spec["breast"])
    return mask[:, ::-1] if spec["laterality"] == "R" else mask


def crop_report(manifest: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Crop boxes of a preprocessing manifest against the generator's ground truth, per image:
    whether the lesion centre is inside, the share of the true breast box covered, and the box area
    relative to the true breast box."""
    m = manifest.merge(truth[["image_id", "breast_y0", "breast_x0", "breast_y1", "breast_x1", "lesion_y", "lesion_x"]],
                       on="image_id")
    iy = (np.minimum(m.bbox_y1, m.breast_y1) - np.maximum(m.bbox_y0, m.breast_y0)).clip(lower=0)
    ix = (np.minimum(m.bbox_x1, m.breast_x1) - np.maximum(m.bbox_x0, m.breast_x0)).clip(lower=0)
    true_area = (m.breast_y1 - m.breast_y0) * (m.breast_x1 - m.breast_x0)
    has_lesion = m.lesion_y.notna()
    inside = (m.lesion_y >= m.bbox_y0) & (m.lesion_y < m.bbox_y1) & (m.lesion_x >= m.bbox_x0) & (m.lesion_x < m.bbox_x1)
    return pd.DataFrame({"image_id": m.image_id, "machine_id": m.machine_id, "has_lesion": has_lesion,
                         "lesion_inside": inside | ~has_lesion, "breast_box_covered": iy * ix / true_area,
                         "area_ratio": (m.bbox_y1 - m.bbox_y0) * (m.bbox_x1 - m.bbox_x0) / true_area})

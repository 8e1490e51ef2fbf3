"""Synthetic screening mammograms in the exact RSNA competition layout (the embedded default data).

Why: the real Kaggle data cannot be shipped or downloaded, yet every code path (MONOCHROME1/2,
10-16 bit, J2K / JPEG Lossless / RLE / native, LINEAR/SIGMOID/multi-valued windows, no window,
burned-in labels, detector edge strips, pectoral muscle, implants) must run on something, and a
model must have a signal to learn. Cancer breasts carry a mass (and sometimes a calcification
cluster) at the same depth in CC and MLO, with a configurable contrast.

Layout written under ``out``::

    train.csv  test.csv  sample_submission.csv  synthetic_truth.csv
    train_images/<patient_id>/<image_id>.dcm    test_images/<patient_id>/<image_id>.dcm
    synthetic_masks/<patient_id>/<image_id>.png   (the exact tissue mask of each image)

``synthetic_truth.csv`` is the side file with per-image ground truth (breast box, lesion centre,
test labels); ``train.csv`` keeps exactly the RSNA columns.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from .. import paths
from ..errors import UserError
from ..paths import parse_size
from ..tables import TEST_COLUMNS, TRAIN_COLUMNS
from .anatomy import (
    MACHINE_WEIGHTS,
    MACHINES,
    breast_params,
    burn_in,
    draw_breast,
    draw_lesion,
    draw_vascular_calcs,
    lesion_position,
    to_stored,
)

MIN_SYNTH_PX = 64


def make_image(spec: dict) -> dict:
    """Render, encode and write one DICOM; return its ground-truth row."""
    from ..dicom import write_dicom

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
    gamma, gain = spec.get("look", (1.0, 1.0))
    if (gamma, gain) != (1.0, 1.0):  # the machine's own rendering of tissue (metadata_signal)
        a = np.where(mask, np.clip(gain * np.power(a, gamma), 0, 1), a).astype(np.float32)
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


PRESETS = {
    # the demo: every code path, lesions a small CNN learns in minutes
    "default": dict(cancer_rate=0.2, lesion_contrast=0.3, anatomy="default", lesions="default", confounder=0.0),
    # the benchmark: fainter masses, calcification-only and one-view cancers, benign mimics, dense
    # breasts that hide lesions, and machine 49 with three times the cancer rate of the others
    # (the hard *anatomy* is a separate option, `anatomy="hard"`, for the crop tests)
    "hard": dict(cancer_rate=0.20, lesion_contrast=0.12, anatomy="default", lesions="hard", confounder=3.0),
    # the hard benchmark where the table matters (metadata_signal): risk rises with age, density hides
    # lesions, each machine renders tissue its own way, BIRADS and density agree with the image
    "hard_metadata": dict(cancer_rate=0.20, lesion_contrast=0.12, anatomy="default", lesions="hard", confounder=3.0,
                          metadata_signal=True),
    # its control: the hard images with a table that carries no signal (no machine confounder either)
    "hard_control": dict(cancer_rate=0.20, lesion_contrast=0.12, anatomy="default", lesions="hard", confounder=0.0),
}
# metadata_signal: (gamma, gain) of each machine's rendering of the attenuation map
MACHINE_LOOK = {49: (1.0, 1.0), 48: (0.7, 1.08), 29: (1.45, 0.92), 21: (0.85, 1.04), 93: (1.25, 0.95), 216: (0.8, 1.0),
                190: (1.15, 0.97)}
AGE_RISK_PER_15Y = 2.5  # metadata_signal: the cancer rate multiplies by this every 15 years of age


def age_risk(age: float) -> float:
    """Relative cancer risk at ``age`` (1 at the mean of the uniform 38-88 ages; 1 when age is missing)."""
    if age != age:
        return 1.0
    ages = np.arange(38, 89)
    return float(AGE_RISK_PER_15Y ** ((age - 60) / 15) / np.mean(AGE_RISK_PER_15Y ** ((ages - 60) / 15)))


def plan_dataset(patients: int, test_patients: int, seed: int, size=(640, 512), cancer_rate: float = 0.2,
                 lesion_contrast: float = 0.3, anatomy: str = "default", lesions: str = "default",
                 confounder: float = 0.0, metadata_signal: bool = False) -> list[dict]:
    """Every image to write, with all randomness drawn here from one seeded generator.

    ``metadata_signal``: the cancer rate rises with age (:func:`age_risk`), a dense breast hides its
    lesion (contrast x (1 - 0.55 density)), each machine renders tissue with its own gamma and gain
    (:data:`MACHINE_LOOK`), density is always recorded, and BIRADS follows the image: a cancer is
    recalled (0), a benign mimic recalled or benign (0 or 2), the rest mostly negative (1)."""
    from ..dicom import make_uid

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
        if metadata_signal:
            rate = min(0.95, rate * age_risk(age))
        cancer_side = rng.choice(["L", "R"]) if rng.random() < rate else None
        difficult = cancer_side is None and rng.random() < 0.08
        jitter = machine.scale * rng.uniform(0.95, 1.05)
        shape = (int(round(size[0] * jitter)), int(round(size[1] * jitter * 1.25 / machine.aspect)))
        study_uid = make_uid(seed, pid, "study")
        for lat in ("L", "R"):
            breast = breast_params(rng, density, implant, anatomy, lesions)
            cancer = int(cancer_side == lat)
            if metadata_signal:  # one BIRADS per breast, as a reader would give it from these images
                birads = (0.0 if rng.random() < 0.9 else np.nan) if cancer else \
                    rng.choice([0.0, 2.0]) if breast.get("mimic") else rng.choice([1.0, 2.0, np.nan], p=[0.8, 0.15, 0.05])
            views = ["CC", "MLO"] + ([rng.choice(["MLO", "CC", "AT", "LM", "ML", "LMO"])] if rng.random() < 0.12 else [])
            for view in views:
                iid = int(next(image_ids))
                specs.append(dict(
                    split=split, site_id=machine.site_id, patient_id=int(pid), image_id=iid, laterality=lat,
                    view=view, age=age, cancer=cancer, biopsy=int(cancer or difficult),
                    invasive=int(cancer and rng.random() < 0.7),
                    BIRADS=birads if metadata_signal else (0 if cancer and rng.random() < 0.6 else np.nan) if cancer else
                    rng.choice([1.0, 2.0, 0.0, np.nan], p=[0.55, 0.2, 0.05, 0.2]),
                    implant=int(implant), density=density_cat if metadata_signal or rng.random() > 0.3 else np.nan,
                    machine_id=machine.machine_id, difficult_negative_case=bool(difficult),
                    shape=shape, breast=breast, seed=int(rng.integers(2 ** 31)),
                    contrast=lesion_contrast * (1 - 0.55 * breast["density"]) if metadata_signal else lesion_contrast,
                    look=MACHINE_LOOK.get(machine.machine_id, (1.0, 1.0)) if metadata_signal else (1.0, 1.0),
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

    from ..progress import bar
    from ..tables import with_prediction_id

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
        s["mask_path"] = str(paths.synthetic_mask(out, s["patient_id"], s["image_id"]))
    it = bar(specs, desc="synth", unit="img", disable=not progress)
    from ..parallel import resolve_jobs, shutdown_local_pool

    try:
        truth = Parallel(n_jobs=resolve_jobs(jobs), batch_size=8)(delayed(make_image)(s) for s in it)
    finally:
        shutdown_local_pool()

    table = pd.DataFrame([{k: v for k, v in s.items() if k not in ("shape", "breast", "path", "mask_path", "uid",
                                                                    "study_uid", "series_uid", "contrast", "seed", "look")}
                          for s in specs])
    train = table[table.split == "train"][TRAIN_COLUMNS]
    _write_new_csv(train, paths.split_csv(out, "train"))
    test = with_prediction_id(table[table.split == "test"])
    _write_new_csv(test[TEST_COLUMNS], paths.split_csv(out, "test"))
    sub = pd.DataFrame({"prediction_id": test.prediction_id.drop_duplicates(), "cancer": 0.0})
    _write_new_csv(sub, paths.sample_submission(out))
    truth = table[["split", "patient_id", "image_id", "laterality", "view", "machine_id", "cancer"]].merge(
        pd.DataFrame(truth), on="image_id")
    _write_new_csv(truth, paths.synthetic_truth(out))
    return truth


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

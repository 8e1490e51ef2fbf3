"""How good is the crop? Scores the breast box and the masking against exact tissue masks.

Ground truth comes from the synthetic generator's side files (``synthetic_masks/``, one bi-level
PNG per image) or from phantoms drawn here in memory. Three numbers per image:

* ``kept``: share of the true breast inside the box (must be >= 0.99);
* ``zeroed``: share of the true breast that masking sets to 0 (must be <= 0.01);
* ``area_ratio``: box area over the true breast's box area (must be <= 1.25);

plus ``lesion_inside`` for images with a lesion.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from . import crop as crop_ops
from . import paths

LIMITS = {"kept": 0.99, "zeroed": 0.01, "area_ratio": 1.25}


def score_stored(s, truth: np.ndarray, lesion=None) -> dict:
    """Locate the breast as preprocessing does (:func:`..preprocess.locate_breast`) in a
    :class:`~mammo_utils.dicom.StoredImage` and score box and masking against ``truth`` (full size)."""
    from .preprocess import locate_breast, source_box

    box, seg = locate_breast(s)
    h, w = s.stored.shape
    y0, x0, y1, x1 = source_box(box, s.scale, truth.shape)
    ys, xs = np.nonzero(truth)
    true_area = (ys.max() + 1 - ys.min()) * (xs.max() + 1 - xs.min())
    removed = crop_ops.mask_on_output(seg.remove, (h, w), (0, 0, h, w), truth.shape)
    inside = True
    if lesion is not None and lesion[0] == lesion[0]:
        inside = bool(y0 <= lesion[0] < y1 and x0 <= lesion[1] < x1)
    return {"kept": float(truth[y0:y1, x0:x1].sum() / truth.sum()),
            "zeroed": float((removed & truth).sum() / truth.sum()),
            "area_ratio": float((y1 - y0) * (x1 - x0) / true_area), "found": bool(seg.found),
            "lesion_inside": inside, "box": (y0, x0, y1, x1)}


def score(img: np.ndarray, truth: np.ndarray, lesion=None) -> dict:
    """:func:`score_stored` for an image already in the ``read_image`` convention (a phantom)."""
    from .dicom import StoredImage

    return score_stored(StoredImage.from_display(img), truth, lesion)


def _score_file(data, split: str, row: dict, min_size=None) -> dict:
    from .dicom import read_stored_image
    from .synthetic import read_truth_mask

    s = read_stored_image(paths.dicom_path(data, split, row["patient_id"], row["image_id"]), min_size=min_size)
    truth = read_truth_mask(data, row["patient_id"], row["image_id"])
    return {"image_id": row["image_id"], **score_stored(s, truth, (row["lesion_y"], row["lesion_x"]))}


def check_dataset(data, split: str = "train", image_ids=None, jobs: int = 2, min_size=None) -> pd.DataFrame:
    """Score every image of a synthetic folder (or ``image_ids``) against its tissue mask, read with the
    reduced decode preprocessing uses for an output of ``min_size`` (None: full size)."""
    from joblib import Parallel, delayed

    from .parallel import resolve_jobs, shutdown_local_pool

    truth = pd.read_csv(paths.synthetic_truth(data))
    truth = truth[truth.split == split]
    if image_ids is not None:
        truth = truth[truth.image_id.isin(set(image_ids))]
    rows = truth.to_dict("records")
    try:
        scored = Parallel(n_jobs=resolve_jobs(jobs), batch_size=8)(delayed(_score_file)(data, split, r, min_size) for r in rows)
    finally:
        shutdown_local_pool()
    keep = ["image_id", "patient_id", "laterality", "view", "machine_id", "lesion_kind"]
    return truth[[c for c in keep if c in truth]].merge(pd.DataFrame(scored), on="image_id")


def report_for_manifest(data, split: str, manifest: pd.DataFrame, cfg=None, jobs: int = 2) -> pd.DataFrame | None:
    """Scores for the images of a preprocessing manifest, or None when the data has no synthetic truth."""
    if not paths.synthetic_truth(data).exists() or not (Path(data) / "synthetic_masks").exists():
        return None
    min_size = cfg.size if cfg is not None and cfg.reduced_decode else None
    return check_dataset(data, split, manifest.image_id, jobs, min_size)


def summary(report: pd.DataFrame) -> dict:
    """Worst values and failure counts against :data:`LIMITS`."""
    lesions = report[report.get("lesion_kind", pd.Series("", index=report.index)).fillna("").isin(
        ["mass", "calcifications"])]
    return {"images": len(report), "worst_kept": report.kept.min(), "worst_zeroed": report.zeroed.max(),
            "worst_area_ratio": report.area_ratio.max(), "not_found": int((~report.found).sum()),
            "failing": int(((report.kept < LIMITS["kept"]) | (report.zeroed > LIMITS["zeroed"])
                            | (report.area_ratio > LIMITS["area_ratio"])).sum()),
            "lesions_inside": f"{int(lesions.lesion_inside.sum())}/{len(lesions)}"}


def summary_line(report: pd.DataFrame | None) -> str:
    if report is None:
        return "no synthetic_truth.csv / synthetic_masks: real data has no ground-truth masks"
    s = summary(report)
    return (f"{s['images']} images: worst share of the breast in the box {s['worst_kept']:.4f} (>= 0.99); worst share "
            f"of tissue zeroed {s['worst_zeroed']:.4f} (<= 0.01); worst box area / true box {s['worst_area_ratio']:.3f} "
            f"(<= 1.25); no breast found: {s['not_found']}; failing images: {s['failing']}; "
            f"lesions inside the crop: {s['lesions_inside']}")


def worst_crops(data, split: str, report: pd.DataFrame | None, cfg=None, n: int = 4):
    """(images, truth masks, boxes, titles) of the ``n`` images with the least breast kept (then most zeroed)."""
    from .dicom import read_image
    from .synthetic import read_truth_mask

    if report is None or report.empty:
        return [], [], [], []
    worst = report.assign(badness=(1 - report.kept) + report.zeroed).nlargest(n, "badness")
    truth = pd.read_csv(paths.synthetic_truth(data)).set_index("image_id")
    images, masks, boxes, titles = [], [], [], []
    for r in worst.itertuples():
        pid = truth.loc[r.image_id, "patient_id"]
        images.append(read_image(paths.dicom_path(data, split, pid, r.image_id)))
        masks.append(read_truth_mask(data, pid, r.image_id))
        boxes.append(r.box)
        titles.append(f"{r.image_id} kept {r.kept:.3f} zeroed {r.zeroed:.3f}")
    return images, masks, boxes, titles


# ---- phantoms: the hard cases, drawn in memory -----------------------------------------------------

PHANTOM_KINDS = ("fatty", "fatty_lobular", "wide_pectoral", "dense", "touching", "labelled")


def phantom(kind: str, seed: int = 0, shape=(520, 416), noise: float = 0.004):
    """(image in the read_image convention, true tissue mask, lesion centre) for one hard case."""
    from .synthetic import breast_params, draw_breast, lesion_position

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
    img = np.clip(a - 0.04 + rng.normal(0, noise, a.shape), 0, 1).astype(np.float32)  # window: air at about 0
    if kind == "labelled":
        text = np.zeros(shape, np.uint8)
        cv2.putText(text, "L-MLO", (shape[1] - 150, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.2, 255, 3)
        img[text > 0] = 1.0
        img[:4, :] = 1.0           # detector edge strip touching the breast
        img[:, -5:] = 1.0
    return img, mask, lesion_position(shape, view, b)


def legacy_bbox(img: np.ndarray, work_px: int = 512):
    """The previous method, kept only to show why it was replaced: a threshold a third of the way to
    Otsu's level, an opening of 2 % of the image, and the largest component."""
    h, w = img.shape
    s = min(1.0, work_px / max(h, w))
    small = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) if s < 1 else img
    small = cv2.medianBlur(np.ascontiguousarray(small, dtype=np.float32), 3)
    bg = float(np.percentile(small, 2))
    u8 = np.clip(small * 255, 0, 255).astype(np.uint8)
    otsu = cv2.threshold(u8.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[0] / 255.0
    mask = (small > bg + max(0.33 * (otsu - bg), 0.02)).astype(np.uint8)
    k = max(3, int(round(0.02 * max(small.shape))) | 1)
    mask = crop_ops._morph(mask, cv2.MORPH_OPEN, k)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return (0, 0, h, w)
    return crop_ops.box_from_mask(labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])), s, img.shape)


def hard_examples(seed: int = 0, kinds=PHANTOM_KINDS):
    """(images, true masks, our boxes, legacy boxes, titles) on one phantom of each hard kind."""
    images, masks, ours, legacy, titles = [], [], [], [], []
    for kind in kinds:
        img, mask, _ = phantom(kind, seed)
        s_new = score(img, mask)
        y0, x0, y1, x1 = legacy_bbox(img)
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
            rows.append({"kind": kind, "seed": seed, **score(img, mask, lesion)})
    return pd.DataFrame(rows)

"""How good is the crop? Scores the breast box and the masking against exact tissue masks.

Ground truth comes from the synthetic generator's side files (``synthetic_masks/``, one bi-level
PNG per image) or from the phantoms of :mod:`.synthetic.phantoms`. Three numbers per image:

* ``kept``: share of the true breast inside the box (must be >= 0.99);
* ``zeroed``: share of the true breast that masking sets to 0 (must be <= 0.01);
* ``area_ratio``: box area over the true breast's box area (must be <= 1.25);

plus ``lesion_inside`` for images with a lesion.
"""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from .. import paths, tables
from . import crop as crop_ops

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
    from ..dicom import StoredImage

    return score_stored(StoredImage.from_display(img), truth, lesion)


def read_truth_mask(data, patient_id, image_id) -> np.ndarray:
    """The exact tissue mask the generator wrote beside one of its images."""
    m = cv2.imread(str(paths.synthetic_mask(data, patient_id, image_id)), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise FileNotFoundError(f"no tissue mask for image {image_id} under {paths.synthetic_masks_dir(data)}")
    return m > 0


def _score_file(data, split: str, row: dict, min_size=None) -> dict:
    from ..dicom import read_stored_image

    s = read_stored_image(paths.dicom_path(data, split, row["patient_id"], row["image_id"]), min_size=min_size)
    truth = read_truth_mask(data, row["patient_id"], row["image_id"])
    return {"image_id": row["image_id"], **score_stored(s, truth, (row["lesion_y"], row["lesion_x"]))}


def check_dataset(data, split: str = "train", image_ids=None, jobs: int = 2, min_size=None) -> pd.DataFrame:
    """Score every image of a synthetic folder (or ``image_ids``) against its tissue mask, read with the
    reduced decode preprocessing uses for an output of ``min_size`` (None: full size)."""
    from joblib import Parallel, delayed

    from ..parallel import resolve_jobs, shutdown_local_pool

    truth = tables.read_csv(paths.synthetic_truth(data))
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
    if not paths.synthetic_truth(data).exists() or not paths.synthetic_masks_dir(data).exists():
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


def lesions_in_crops(data, manifest: pd.DataFrame) -> pd.DataFrame:
    """Each lesion box of ``<data>/lesions.csv`` against its image's crop box (source pixels): is its
    centre inside, and how much of the box is kept. The check that needs no synthetic truth."""
    from ..datasets import read_lesions
    from ..tables import sources

    lesions = read_lesions(data)
    boxes = manifest.assign(source=sources(manifest))[["image_id", "source", "bbox_y0", "bbox_x0", "bbox_y1",
                                                       "bbox_x1", "source_rows", "source_cols"]]
    df = lesions.merge(boxes, on="image_id", how="inner")
    cy, cx = (df.y0 + df.y1) / 2, (df.x0 + df.x1) / 2
    df["centre_inside"] = (df.bbox_y0 <= cy) & (cy <= df.bbox_y1) & (df.bbox_x0 <= cx) & (cx <= df.bbox_x1)
    inter_w = (np.minimum(df.x1, df.bbox_x1) - np.maximum(df.x0, df.bbox_x0)).clip(lower=0)
    inter_h = (np.minimum(df.y1, df.bbox_y1) - np.maximum(df.y0, df.bbox_y0)).clip(lower=0)
    df["box_kept"] = inter_w * inter_h / ((df.x1 - df.x0) * (df.y1 - df.y0)).clip(lower=1e-9)
    return df


def crop_by_source(data, manifest: pd.DataFrame) -> pd.DataFrame:
    """Per source: images, the crop's share of the image (median, smallest), and where ``lesions.csv``
    has boxes, the lesion centres inside the crop and the worst share of a lesion box kept."""
    from ..tables import sources

    m = manifest.assign(source=sources(manifest),
                        crop_share=(manifest.bbox_y1 - manifest.bbox_y0) * (manifest.bbox_x1 - manifest.bbox_x0)
                        / (manifest.source_rows * manifest.source_cols))
    out = m.groupby("source").agg(images=("image_id", "size"), crop_share_median=("crop_share", "median"),
                                  crop_share_min=("crop_share", "min"))
    lesions = lesions_in_crops(data, manifest)
    if len(lesions):
        g = lesions.groupby("source")
        out["lesions"] = g.size()
        out["centres_inside"] = g.centre_inside.sum()
        out["worst_box_kept"] = g.box_kept.min()
    return out


def worst_crops(data, split: str, report: pd.DataFrame | None, cfg=None, n: int = 4):
    """(images, truth masks, boxes, titles) of the ``n`` images with the least breast kept (then most zeroed)."""
    from ..dicom import read_image

    if report is None or report.empty:
        return [], [], [], []
    worst = report.assign(badness=(1 - report.kept) + report.zeroed).nlargest(n, "badness")
    truth = tables.read_csv(paths.synthetic_truth(data)).set_index("image_id")
    images, masks, boxes, titles = [], [], [], []
    for r in worst.itertuples():
        pid = truth.loc[r.image_id, "patient_id"]
        images.append(read_image(paths.dicom_path(data, split, pid, r.image_id)))
        masks.append(read_truth_mask(data, pid, r.image_id))
        boxes.append(r.box)
        titles.append(f"{r.image_id} kept {r.kept:.3f} zeroed {r.zeroed:.3f}")
    return images, masks, boxes, titles


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

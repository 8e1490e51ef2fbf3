"""Breast-box quality over the whole synthetic default set, against the generator's exact tissue masks.

    .venv/bin/python benchmarks/crop_quality.py [--data data/synthetic] [--patients 200]

Prints, over every image: lesions inside the crop, the minimum share of breast pixels kept, and the
maximum box area relative to the true breast box (targets: all, >= 0.99, <= 1.15).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from mammo_utils.dicom import read_image
from mammo_utils.preprocess import breast_bbox
from mammo_utils.synthetic import lesion_position, plan_dataset, truth_mask, write_dataset


def check(data: Path, spec: dict) -> dict:
    img = read_image(data / f"{spec['split']}_images" / str(spec["patient_id"]) / f"{spec['image_id']}.dcm")
    y0, x0, y1, x1 = breast_bbox(img)
    mask = truth_mask(spec)
    ys, xs = np.nonzero(mask)
    true_area = (ys.max() + 1 - ys.min()) * (xs.max() + 1 - xs.min())
    inside = True
    if spec["cancer"]:
        ly, lx = lesion_position(spec["shape"], spec["view"], spec["breast"])
        lx = spec["shape"][1] - 1 - lx if spec["laterality"] == "R" else lx
        inside = y0 <= ly < y1 and x0 <= lx < x1
    return {"machine_id": spec["machine_id"], "view": spec["view"], "cancer": spec["cancer"], "lesion_inside": inside,
            "kept": mask[y0:y1, x0:x1].sum() / mask.sum(), "area_ratio": (y1 - y0) * (x1 - x0) / true_area}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/synthetic")
    ap.add_argument("--patients", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data = Path(args.data)
    if not (data / "train.csv").exists():
        write_dataset(data, patients=args.patients, seed=args.seed)
    specs = plan_dataset(args.patients, max(2, args.patients // 10), args.seed)
    rows = pd.DataFrame(Parallel(n_jobs=2, batch_size=16)(delayed(check)(data, s) for s in specs))
    print(f"{len(rows)} images; lesions inside the crop: {int(rows[rows.cancer == 1].lesion_inside.sum())}"
          f"/{int((rows.cancer == 1).sum())}; breast pixels kept: min {rows.kept.min():.4f}, mean {rows.kept.mean():.4f}; "
          f"box area / true box: max {rows.area_ratio.max():.3f}, mean {rows.area_ratio.mean():.3f}")
    print(rows.groupby("machine_id")[["kept", "area_ratio"]].agg(["min", "max"]).round(4).to_string())


if __name__ == "__main__":
    main()

"""Crop quality against exact tissue masks, on the synthetic default anatomy, the hard anatomy and phantoms.

    .venv/bin/python benchmarks/crop_quality.py [--patients 60]

For each set: the worst share of the breast kept in the box (>= 0.99), the worst share of tissue
zeroed by masking (<= 0.01), the worst box area over the true box (<= 1.25), images where no breast
was found, and lesions inside the crop. The previous method (Otsu/3 + opening) is scored beside on
the phantoms; the two phantoms of measured real film scans (``film_glow``, ``film_holder``) get a line each.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

from mammo_utils.prepare import crop_quality as cq
from mammo_utils.synthetic import phantoms, write_dataset


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for anatomy in ("default", "hard"):
            data = Path(tmp) / anatomy
            write_dataset(data, patients=args.patients, seed=args.seed, anatomy=anatomy, progress=False)
            report = pd.concat([cq.check_dataset(data, s) for s in ("train", "test")])
            print(f"{anatomy:8s} anatomy: {cq.summary_line(report)}")
    rows = []
    for seed in range(7):
        for kind in phantoms.PHANTOM_KINDS:
            for noise in (0.004, 0.02):
                img, mask, lesion = phantoms.phantom(kind, seed, noise=noise)
                y0, x0, y1, x1 = cq.legacy_bbox(img)
                rows.append({"kind": kind, **cq.score(img, mask, lesion),
                             "legacy_kept": mask[y0:y1, x0:x1].sum() / mask.sum()})
    r = pd.DataFrame(rows)
    print(f"phantoms: {cq.summary_line(r.assign(lesion_kind='mass'))}")
    print(f"phantoms, previous method: worst share of the breast in the box {r.legacy_kept.min():.3f}; "
          f"phantoms below 0.99: {int((r.legacy_kept < 0.99).sum())}/{len(r)}")
    for kind, what in (("film_glow", "CBIS-DDSM CC scan, chest-wall glow and border rows"),
                       ("film_holder", "mini-MIAS scan, breast filling the film beside holder strips")):
        k = r[r.kind == kind]
        print(f"{kind} ({what}): worst share kept {k.kept.min():.4f}, worst box area / true box "
              f"{k.area_ratio.max():.3f}, lesions inside {int(k.lesion_inside.sum())}/{len(k)}")


if __name__ == "__main__":
    main()

"""mini-MIAS: ``mdb001.pgm``..``mdb322.pgm`` film scans and ``Info.txt``.

The PGMs are wrapped as DICOM (MONOCHROME2, pixel values unchanged) so one read path serves every
dataset. Images come in pairs per patient, even numbers left; every view is MLO. Lesion centres
count from the bottom-left corner, so the image row is ``height - y``.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .. import paths
from ..errors import UserError
from .common import UNREADABLE_LABEL, Imported, clean_box, find_all, import_head, parallel_map
from .destination import Prior, check_inside, mark_pending

LABELS = {"malignant": "cancer = severity M; B (benign) and NORM are 0"}
REFERENCE = re.compile(r"mdb[0-9]{3}", re.IGNORECASE)  # the whole first token, mdb001..mdb322 (\d takes any script's digits)


def parse_info(path: Path) -> pd.DataFrame:
    """One row per line of Info.txt that starts with ``mdb``: reference, tissue, class, severity, x, y, radius,
    and the line's number."""
    rows = []
    for number, line in enumerate(Path(path).read_text(errors="replace").splitlines(), start=1):
        tokens = line.split()
        if not tokens or not REFERENCE.fullmatch(tokens[0]):
            continue
        tokens += [None] * (7 - len(tokens))
        ref, tissue, cls, severity, x, y, r = tokens[:7]
        rows.append({"reference": ref.lower(), "tissue": tissue, "abnormality": cls,
                     "severity": (severity or "").upper(), "x": _number(x), "y": _number(y), "radius": _number(r),
                     "line": number})
    return pd.DataFrame(rows, columns=["reference", "tissue", "abnormality", "severity", "x", "y", "radius", "line"])


def _number(text) -> float | None:
    return float(text) if text and re.match(r"^-?\d+(\.\d+)?$", text) else None


def wrap_pgm(task: str) -> str | tuple:
    """Write one PGM as DICOM (pixels unchanged); returns (height, width, SHA-1 of the pixels) or the reason
    it failed.

    ``task`` is ``"<pgm>|<dcm>|<patient>|<side>"``; an up-to-date DICOM is left alone (reruns)."""
    import cv2

    from ..dicom.write import make_uid, write_dicom

    src, dst, patient, side = task.split("|")
    src, dst = Path(src), Path(dst)
    img = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)
    if img is None or img.ndim != 2:
        return "not a readable grayscale PGM"
    digest = hashlib.sha1(np.ascontiguousarray(img).tobytes()).hexdigest()
    if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
        return (*img.shape, digest)
    bits = 8 if img.dtype == np.uint8 else 16
    attrs = {"PatientID": patient, "ImageLaterality": side, "Laterality": side, "ViewPosition": "MLO",
             "BitsStored": bits, "SOPInstanceUID": make_uid("mias", src.stem),
             "StudyInstanceUID": make_uid("mias-study", patient), "SeriesInstanceUID": make_uid("mias-series", src.stem),
             "Modality": "MG", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.1.2"}
    write_dicom(dst, img, attrs)  # through a temporary file: a killed import leaves no half file
    return (*img.shape, digest)


def load(src: Path, label: str, out: Path, jobs: int = -1, progress: bool = True, prior: Prior | None = None) -> Imported:
    info_path = next(iter(find_all(src, lambda p: p.name.lower() == "info.txt")), None)
    if info_path is None:
        raise UserError(f"{src}: expected mini-MIAS's Info.txt (lines like 'mdb001 G CIRC B 535 425 197') below "
                        f"this folder")
    info = parse_info(info_path)
    if info.empty:
        raise UserError(f"{info_path}: no line starts with mdb; is this mini-MIAS's Info.txt?")
    pgms = {p.stem.lower(): p for p in find_all(src, lambda p: p.suffix.lower() == ".pgm")}
    imp = Imported(rows=[], label=LABELS[label] + "; no BI-RADS, density or age (tissue F/G/D is not BI-RADS "
                   "density: left empty)", written=True)
    tasks, refs = [], []
    for ref, group in info.groupby("reference", sort=True):
        if ref not in pgms:
            imp.skip(f"{ref}.pgm", "listed in Info.txt; no such file")
            continue
        unread = group[group.abnormality.fillna("").str.upper().ne("NORM") & ~group.severity.isin(["B", "M"])]
        if len(unread) and not group.severity.eq("M").any():  # an abnormality neither benign nor malignant
            r = unread.iloc[0]
            imp.skip_row(info_path, r.line, "severity", r.severity,
                         f"{ref}: class {r.abnormality if isinstance(r.abnormality, str) else '(none)'} without severity B or M: {UNREADABLE_LABEL}")
            continue
        n = int(ref[3:])
        patient, side = f"mias{(n + 1) // 2:03d}", "L" if n % 2 == 0 else "R"
        dst = paths.dicom_path(out, "train", patient, ref)
        if os.path.lexists(dst) and not (prior or Prior()).owns(dst):
            imp.skip(pgms[ref], f"{dst} is already there and this import did not write it; left alone")
            continue
        tasks.append(f"{pgms[ref]}|{dst}|{patient}|{side}")
        refs.append((ref, patient, side, group))
    check_inside(out, [t.split("|")[1] for t in tasks])
    mark_pending(out, import_head("mias", src, "written"), [t.split("|")[1] for t in tasks])
    shapes = parallel_map(wrap_pgm, tasks, jobs, "wrapping PGM as DICOM", progress)
    for (ref, patient, side, group), shape in zip(refs, shapes):
        if isinstance(shape, str):
            imp.skip(pgms[ref], shape)
            continue
        h, w, digest = shape
        severities = set(group.severity) - {""}
        imp.rows.append({
            "site_id": "", "patient_id": patient, "image_id": ref, "laterality": side, "view": "MLO", "age": None,
            "cancer": int("M" in severities), "biopsy": pd.NA, "invasive": pd.NA, "BIRADS": pd.NA, "implant": 0,
            "density": "", "machine_id": None, "difficult_negative_case": pd.NA, "official_split": "",
            "src": pgms[ref], "facts": {"pixel_key": digest, "pixel_hash": digest}})
        for r in group.itertuples():
            if pd.isna(r.x) or pd.isna(r.y):
                continue  # NORM, or spread calcifications without a centre
            radius = 1.0 if pd.isna(r.radius) else r.radius
            cx, cy = r.x, h - r.y
            box = clean_box(imp, cx - radius, cy - radius, cx + radius, cy + radius, w, h)
            if box is None:
                continue  # a centre beyond the image, or no radius: counted in import.json
            imp.lesions.append({"image_id": ref, "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3],
                                "finding": r.abnormality,
                                "pathology": {"M": "MALIGNANT", "B": "BENIGN"}.get(r.severity, "")})
    unlisted = sorted(set(pgms) - set(info.reference))
    if unlisted:
        imp.notes.append(f"{len(unlisted)} PGM file(s) not in Info.txt (not imported), e.g. {unlisted[:3]}")
    no_centre = int((info.x.isna() & info.severity.isin(["B", "M"])).sum())
    imp.notes.append(f"Info.txt: {len(info)} lines for {info.reference.nunique()} images; {no_centre} abnormalities "
                     f"without a centre (no box)")
    if imp.box_fixes:
        imp.notes.append("lesion boxes: " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(imp.box_fixes.items()))
                         + " (a centre and radius that leave the image are clamped to it; nothing left is dropped)")
    return imp

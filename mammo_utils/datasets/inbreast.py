"""INbreast: ``AllDICOMs/<File Name>_<patient hash>_MG_<L|R>_<CC|ML>_ANON.dcm``, ``INbreast.csv`` and
OsiriX plist ROIs in ``AllXML/<File Name>.xml``.

The patient is the hash in the file name (the CSV's Patient ID is often empty). There is no
per-image pathology: cancer comes from the image's BI-RADS, with the threshold a choice.
"""
from __future__ import annotations

import plistlib
import re
from pathlib import Path

import pandas as pd

from ..errors import UserError
from .common import (
    BIRADS_NOTE,
    DENSITY_LETTERS,
    RSNA_BIRADS,
    UNREADABLE_LABEL,
    Imported,
    age_years,
    find_all,
    find_one,
    parallel_map,
    read_source_csv,
    require_columns,
)
from .headers import header_facts

LABELS = {
    "4c": "cancer = BI-RADS 4c, 5 or 6 (common practice; INbreast has no per-image pathology)",
    "4": "cancer = BI-RADS 4a, 4b, 4c, 5 or 6",
    "5": "cancer = BI-RADS 5 or 6",
}
MALIGNANT = {"4c": {"4C", "5", "6"}, "4": {"4A", "4B", "4C", "5", "6"}, "5": {"5", "6"}}
FILE = re.compile(r"^(\d+)_([0-9a-z]+)_MG_([LR])_(CC|MLO|ML)_ANON\.dcm$", re.IGNORECASE)
POINT = re.compile(r"\(\s*([-\d.eE+]+)\s*,\s*([-\d.eE+]+)\s*\)")


def roi_boxes(path: Path) -> list[dict]:
    """Each ROI of an OsiriX plist as a box ``x0, y0, x1, y1`` (x the column; a point lesion is one pixel)."""
    with open(path, "rb") as f:
        plist = plistlib.load(f)
    out = []
    for image in plist.get("Images", [])[:1]:
        for roi in image.get("ROIs", []):
            pts = [(float(x), float(y)) for p in roi.get("Point_px", []) for x, y in POINT.findall(str(p))]
            if not pts:
                continue
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            out.append({"x0": min(xs), "y0": min(ys), "x1": max(xs) + 1, "y1": max(ys) + 1,
                        "finding": str(roi.get("Name", "")), "points": len(pts)})
    return out


def load(src: Path, label: str, jobs: int = -1, progress: bool = True) -> Imported:
    csv = find_one(src, "INbreast.csv", "INbreast's INbreast.csv (semicolon-separated)")
    table = read_source_csv(csv, sep=";", encoding_errors="replace")
    require_columns(table, {"File Name", "Bi-Rads"}, csv)
    table = table.dropna(subset=["File Name"])
    table["File Name"] = table["File Name"].str.split(".").str[0]
    imp = Imported(rows=[], label=LABELS[label] + "; " + BIRADS_NOTE + "; ACR 1-4 -> density A-D")
    listed_names = set(table["File Name"])  # before the rows whose label cannot be read are left out
    said = table["Bi-Rads"].fillna("").str.upper()
    unread = ~said.isin(RSNA_BIRADS)
    for i in table.index[unread]:  # the label: an empty or unknown cell is not BI-RADS 1
        imp.skip_row(csv, i + 2, "Bi-Rads", table["Bi-Rads"].fillna("")[i],
                     f"Bi-Rads is not a BI-RADS category (1-6, 4a-4c): {UNREADABLE_LABEL}")
    cancer = set(table["File Name"][said.isin(MALIGNANT[label])])  # a malignant row decides whatever else
    doubtful = ~unread & table["File Name"].isin(set(table["File Name"][unread]) - cancer)
    for i in table.index[doubtful]:
        imp.skip_row(csv, i + 2, "Bi-Rads", table["Bi-Rads"][i], f"another row of File Name {table['File Name'][i]} "
                     f"has a Bi-Rads that cannot be read: {UNREADABLE_LABEL}")
    table = table[~unread & ~doubtful]
    files = {}
    for p in find_all(src, lambda p: p.suffix.lower() == ".dcm"):
        m = FILE.match(p.name)
        if m:
            files[m.group(1)] = (p, m)
        else:
            imp.skip(p, "file name is not <File Name>_<patient hash>_MG_<L|R>_<CC|ML>_ANON.dcm")
    if not files:
        raise UserError(f"{src}: expected AllDICOMs/<File Name>_<hash>_MG_<L|R>_<CC|ML>_ANON.dcm below this folder")
    xmls = {p.stem: p for p in find_all(src, lambda p: p.suffix.lower() == ".xml")}
    mismatched, listed = 0, []
    for r in table.to_dict("records"):
        name = r["File Name"]
        if name not in files:
            imp.skip(f"AllDICOMs/{name}_*_ANON.dcm", f"{csv.name} lists File Name {name}; no such DICOM file")
        else:
            listed.append(r)
    facts = parallel_map(header_facts, [files[r["File Name"]][0] for r in listed], jobs, "headers", progress)
    for r, fact in zip(listed, facts):
        name = r["File Name"]
        path, m = files[name]
        if isinstance(fact, str):
            imp.skip(path, fact)
            continue
        side, view = m.group(3).upper(), m.group(4).upper()
        view = "MLO" if view == "ML" else view
        csv_view = str(r.get("View", "")).upper()
        if (str(r.get("Laterality", side)).upper()[:1], "MLO" if csv_view == "ML" else csv_view or view) != (side, view):
            mismatched += 1
        birads = r["Bi-Rads"].upper()
        imp.rows.append({
            "site_id": "", "patient_id": m.group(2).lower(), "image_id": name, "laterality": side, "view": view,
            "age": age_years(r.get("Patient age")), "cancer": int(birads in MALIGNANT[label]), "biopsy": pd.NA,
            "invasive": pd.NA, "BIRADS": RSNA_BIRADS.get(birads, pd.NA), "implant": 0,
            "density": DENSITY_LETTERS.get(str(r.get("ACR", "")).strip(), ""), "machine_id": None,
            "difficult_negative_case": pd.NA, "official_split": "", "src": path, "facts": fact})
        if name in xmls:
            try:
                boxes = roi_boxes(xmls[name])
            except Exception as exc:  # noqa: BLE001 - a broken XML loses its boxes, not the image
                imp.skip(xmls[name], f"unreadable ROI plist ({type(exc).__name__}: {exc})")
                continue
            imp.lesions += [{"image_id": name, **{k: b[k] for k in ("x0", "y0", "x1", "y1", "finding")},
                             "pathology": ""} for b in boxes]
    unlisted = sorted(set(files) - set(listed_names))
    if unlisted:
        imp.notes.append(f"{len(unlisted)} DICOM file(s) not in {csv.name} (not imported), e.g. {unlisted[:3]}")
    if mismatched:
        imp.notes.append(f"{mismatched} row(s) where {csv.name}'s Laterality/View disagree with the file name "
                         f"(the file name was used)")
    imp.notes.append(f"{len(xmls)} ROI XML files; {len(imp.lesions)} ROIs")
    return imp

"""Small copies of the public datasets, laid out file for file as each ships (``../DATASETS.md``).

Each writer draws a few breasts with the generator's anatomy (film scans get the :mod:`.film` look),
lays them out as the dataset does, quirks included (CBIS's CSV paths that do not match the disk and
its swapped mask columns, VinDr's negative box coordinates, INbreast's ``ML`` file names, mini-MIAS's
bottom-left origin), and returns the truth: one row per image with the lesion centre in stored pixels
and the breast's box. The importer tests and ``benchmarks/import_datasets.py`` use them.
"""
from __future__ import annotations

import plistlib
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ..dicom.write import make_uid, write_dicom
from .anatomy import breast_params, draw_breast, draw_lesion, lesion_position
from .film import film_scan, to_film_bits

VIEWS = ("CC", "MLO")


def draw_image(rng, laterality: str, view: str, lesion: bool, shape=(256, 208), film: bool = False,
               label_touching: bool = True):
    """(display image in [0, 1], breast mask, lesion centre (y, x) or None, lesion radius, artefact mask).

    A right breast is mirrored (chest wall on the right), as scanners store it."""
    b = breast_params(rng, rng.uniform(0.2, 0.6), False)
    a, mask = draw_breast(rng, shape, view, b["density"], b)
    centre, radius = None, b["lesion_r"] * shape[0]
    if lesion:
        centre = lesion_position(shape, view, b)
        a = draw_lesion(rng, a, mask, centre, radius, 0.25, calcs=False)
    art = np.zeros(shape, bool)
    if film:
        img, mask, art, (dy, dx) = film_scan(a, mask, rng, label_touching=label_touching)
        centre = (centre[0] + dy, centre[1] + dx) if centre else None
    else:
        img = np.clip(a + rng.normal(0, 0.004, a.shape), 0, 1).astype(np.float32)
    if laterality == "R":
        img, mask, art = img[:, ::-1].copy(), mask[:, ::-1].copy(), art[:, ::-1].copy()
        centre = (centre[0], shape[1] - 1 - centre[1]) if centre else None
    return img, mask, centre, radius, art


def _truth_row(source, patient, image, side, view, cancer, mask, centre, **extra) -> dict:
    ys, xs = np.nonzero(mask)
    return {"source": source, "patient_id": patient, "image_id": image, "laterality": side, "view": view,
            "cancer": int(cancer), "lesion_y": centre[0] if centre else np.nan,
            "lesion_x": centre[1] if centre else np.nan, "breast_y0": int(ys.min()), "breast_x0": int(xs.min()),
            "breast_y1": int(ys.max()) + 1, "breast_x1": int(xs.max()) + 1, **extra}


def _stored(img: np.ndarray, bits: int, monochrome1: bool = False) -> np.ndarray:
    top = 2 ** bits - 1
    v = np.round(np.clip(img, 0, 1) * top)
    return (top - v if monochrome1 else v).astype(np.uint16 if bits > 8 else np.uint8)


def _hex(rng, n: int = 32) -> str:
    return "".join(rng.choice(list("0123456789abcdef"), n))


# ---- VinDr-Mammo ---------------------------------------------------------------------------------

def write_vindr(root, studies: int = 4, seed: int = 0, shape=(256, 208)) -> pd.DataFrame:
    """``images/<study>/<image>.dicom`` + the three CSVs. Study 0 has a BI-RADS 5 breast, study 1 a BI-RADS 4."""
    root, rng = Path(root), np.random.default_rng(seed)
    breast_rows, finding_rows, meta_rows, truth = [], [], [], []
    for s in range(studies):
        study = _hex(rng)
        split = "test" if s % 4 == 3 else "training"
        for side in "LR":
            birads = 5 if (s == 0 and side == "L") else 4 if (s == 1 and side == "R") else 1 + s % 2
            for view in VIEWS:
                image = _hex(rng)
                img, mask, centre, radius, _ = draw_image(rng, side, view, birads >= 4, shape)
                mono1 = s == 2
                write_dicom(root / "images" / study / f"{image}.dicom", _stored(img, 12, mono1),
                            {"BitsStored": 12, "PhotometricInterpretation": "MONOCHROME1" if mono1 else "MONOCHROME2",
                             "ImageLaterality": side, "ViewPosition": view})
                common = {"study_id": study, "series_id": _hex(rng), "image_id": image, "laterality": side,
                          "view_position": view, "height": shape[0], "width": shape[1],
                          "breast_birads": f"BI-RADS {birads}", "breast_density": f"DENSITY {'ABCD'[s % 4]}",
                          "split": split}
                breast_rows.append(common)
                if centre:
                    y, x = centre
                    x0 = -3.5 if s == 0 and view == "CC" else x - radius  # a negative coordinate, as VinDr has
                    finding_rows.append({**common, "finding_categories": "['Mass']", "finding_birads": f"BI-RADS {birads}",
                                         "xmin": x0, "ymin": y - radius, "xmax": x + radius, "ymax": y + radius})
                else:
                    finding_rows.append({**common, "finding_categories": "['No Finding']", "finding_birads": "",
                                         "xmin": "", "ymin": "", "xmax": "", "ymax": ""})
                meta_rows.append({"SOP Instance UID": image, "Series Instance UID": common["series_id"],
                                  "Patient's Age": f"{40 + s:03d}Y", "Manufacturer": "SIEMENS",
                                  "Manufacturer's Model Name": "Mammomat Inspiration"})
                truth.append(_truth_row("vindr", study, image, side, view, birads == 5, mask, centre,
                                        official_split="train" if split == "training" else "test", age=40 + s))
    pd.DataFrame(breast_rows).to_csv(root / "breast-level_annotations.csv", index=False)
    pd.DataFrame(finding_rows).to_csv(root / "finding_annotations.csv", index=False)
    pd.DataFrame(meta_rows).to_csv(root / "metadata.csv", index=False)
    return pd.DataFrame(truth)


# ---- CBIS-DDSM -----------------------------------------------------------------------------------

def write_cbis(root, patients: int = 3, seed: int = 0, shape=(320, 256), nbia_metadata: bool = False,
               duplicate: bool = False) -> pd.DataFrame:
    """NBIA's download (``CBIS-DDSM/<view folder>/<date>-DDSM-NA-<n>/1.000000-full mammogram images-<n>/1-1.dcm``)
    and the four case CSVs, whose paths name UIDs instead. Patient 0's mask and cropped columns are swapped.
    ``duplicate``: patient 0's CC mammogram ships a second time, as CBIS does, under a ``Calc-Training_...``
    folder (the same file) with a calcification of its own (truth row ``duplicate_of`` names it)."""
    root, rng = Path(root), np.random.default_rng(seed)
    top = root / "CBIS-DDSM"
    rows = {(k, sp): [] for k in ("mass", "calc") for sp in ("train", "test")}
    truth, nbia = [], []
    for p in range(patients):
        patient = f"P_{p * 7 + 1:05d}"
        kind = "mass" if p % 2 == 0 else "calc"
        split = "test" if p == patients - 1 else "train"
        pathology = ["MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK"][p % 3]
        side = "LEFT" if p % 2 == 0 else "RIGHT"
        for view in VIEWS:
            folder = f"{kind.title()}-{'Training' if split == 'train' else 'Test'}_{patient}_{side}_{view}"
            img, mask, centre, radius, _ = draw_image(rng, side[0], view, True, shape, film=True)
            study, series = make_uid("cbis", folder, "study"), make_uid("cbis", folder, "series")
            full = top / folder / f"07-20-2016-DDSM-NA-{study[-5:]}" / f"1.000000-full mammogram images-{series[-5:]}"
            write_dicom(full / "1-1.dcm", to_film_bits(img, 16), {"BitsStored": 16, "PatientID": folder})
            nbia.append({"Subject ID": folder, "Study UID": study, "Series UID": series,
                         "File Location": "./" + str(full.relative_to(root))})
            roi = np.zeros(shape, np.uint8)
            cv2.circle(roi, (round(centre[1]), round(centre[0])), max(2, round(radius)), 255, -1)
            abn = f"{folder}_1"
            mstudy, mseries = make_uid("cbis", abn, "study"), make_uid("cbis", abn, "series")
            mdir = top / abn / f"07-21-2016-DDSM-NA-{mstudy[-5:]}" / f"1.000000-ROI mask images-{mseries[-5:]}"
            write_dicom(mdir / "1-1.dcm", roi, {"BitsStored": 8, "PatientID": abn})
            ys, xs = np.nonzero(roi)
            write_dicom(mdir / "1-2.dcm", to_film_bits(img, 16)[ys.min():ys.max() + 1, xs.min():xs.max() + 1],
                        {"BitsStored": 16, "PatientID": abn})
            nbia.append({"Subject ID": abn, "Study UID": mstudy, "Series UID": mseries,
                         "File Location": "./" + str(mdir.relative_to(root))})
            image_path = f"{folder}/{study}/{series}/000000.dcm"
            crop_path, mask_path = f"{abn}/{mstudy}/{mseries}/000000.dcm", f"{abn}/{mstudy}/{mseries}/000001.dcm"
            if p == 0:
                crop_path, mask_path = mask_path, crop_path
            row = {"patient_id": f" {patient}", "breast_density": 1 + p % 4, "left or right breast": side,
                   "image view": view, "abnormality id": 1, "abnormality type": kind, "assessment": 4 if p else 5,
                   "pathology": pathology, "subtlety": 3, "image file path": image_path,
                   "cropped image file path": crop_path, "ROI mask file path": mask_path + "\n"}
            if kind == "calc":
                row["breast density"] = row.pop("breast_density")
                row.update({"calc type": "PLEOMORPHIC", "calc distribution": "CLUSTERED"})
            else:
                row.update({"mass shape": "IRREGULAR", "mass margins": "SPICULATED"})
            rows[(kind, split)].append(row)
            truth.append(_truth_row("cbis-ddsm", patient, folder, side[0], view, pathology == "MALIGNANT", mask,
                                    centre, official_split=split, pathology=pathology))
            if duplicate and p == 0 and view == "CC":
                twin = folder.replace("Mass-", "Calc-")
                shutil.copytree(full, top / twin / full.relative_to(top / folder))
                cv2.circle(roi, (round(centre[1]), round(centre[0])), max(2, round(radius)), 0, -1)
                cv2.circle(roi, (shape[1] // 2, shape[0] // 2), 4, 255, -1)  # its own calcification
                tdir = top / f"{twin}_1" / "07-21-2016-DDSM-NA-00000" / "1.000000-ROI mask images-00000"
                write_dicom(tdir / "1-1.dcm", roi, {"BitsStored": 8, "PatientID": f"{twin}_1"})
                rows[("calc", split)].append({
                    **{k: v for k, v in row.items() if k not in ("mass shape", "mass margins", "breast_density")},
                    "breast density": row.get("breast_density", 1), "abnormality type": "calcification",
                    "calc type": "PLEOMORPHIC", "calc distribution": "CLUSTERED", "pathology": "BENIGN",
                    "image file path": f"{twin}/{study}/{series}/000000.dcm",
                    "cropped image file path": f"{twin}_1/0/0/000000.dcm", "ROI mask file path": f"{twin}_1/0/0/000001.dcm"})
                truth[-1]["duplicate_of"] = twin
    for (kind, split), part in rows.items():
        cols = part[0].keys() if part else ["patient_id", "left or right breast", "image view", "abnormality id",
                                           "pathology", "image file path"]
        pd.DataFrame(part, columns=list(cols)).to_csv(root / f"{kind}_case_description_{split}_set.csv", index=False)
    if nbia_metadata:
        pd.DataFrame(nbia).to_csv(root / "metadata.csv", index=False)
    return pd.DataFrame(truth)


# ---- CMMD ----------------------------------------------------------------------------------------

CODE_MEANINGS = {"CC": "cranio-caudal", "MLO": "medio-lateral oblique"}


def write_cmmd(root, patients: int = 3, seed: int = 0, shape=(256, 208), duplicate: bool = False) -> pd.DataFrame:
    """``CMMD/<ID1>/<date>-NA-<n>/1.000000-NA-<n>/1-1.dcm``..``1-4.dcm`` (side and view only in the headers)
    and the clinical sheet: patient 0's left breast Malignant, patient 1's right Benign, the rest no row.
    ``duplicate``: patient 0's first image is also the last patient's ``1-5.dcm`` (the same pixels under a
    new SOPInstanceUID), as CMMD has a few images duplicated across patient ids."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    root, rng = Path(root), np.random.default_rng(seed)
    clinical, truth = [], []
    for p in range(patients):
        patient = f"D1-{p + 1:04d}"
        series = root / "CMMD" / patient / f"07-18-2010-NA-NA-{70000 + p}" / f"1.000000-NA-{80000 + p}"
        k = 0
        for side in "LR":
            finding = "Malignant" if (p == 0 and side == "L") else "Benign" if (p == 1 and side == "R") else None
            if finding:
                clinical.append({"ID1": patient, "LeftRight": side, "Age": 45 + p, "number": 1,
                                 "abnormality": "mass", "classification": finding, "subtype": ""})
            for view in VIEWS:
                k += 1
                img, mask, centre, _, _ = draw_image(rng, side, view, finding == "Malignant", shape)
                code = Dataset()
                code.CodeMeaning = CODE_MEANINGS[view]
                write_dicom(series / f"1-{k}.dcm", _stored(img, 8),
                            {"BitsStored": 8, "ImageLaterality": side, "ViewPosition": "",
                             "ViewCodeSequence": Sequence([code]), "VOILUTFunction": "SIGMOID",
                             "WindowCenter": 128, "WindowWidth": 256, "PatientID": patient})
                truth.append(_truth_row("cmmd", patient, f"{patient}_1-{k}", side, view, finding == "Malignant",
                                        mask, centre, official_split=""))
    if duplicate:
        import pydicom

        first = next((root / "CMMD" / "D1-0001").rglob("1-1.dcm"))
        ds = pydicom.dcmread(first)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = make_uid("cmmd", "duplicate")
        ds.PatientID = patient
        ds.save_as(series / "1-5.dcm", enforce_file_format=True)
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(clinical).to_excel(root / "CMMD_clinicaldata_revision.xlsx", index=False)
    return pd.DataFrame(truth)


# ---- INbreast ------------------------------------------------------------------------------------

def write_inbreast(root, patients: int = 3, seed: int = 0, shape=(256, 208)) -> pd.DataFrame:
    """``AllDICOMs/<File Name>_<hash>_MG_<L|R>_<CC|ML>_ANON.dcm``, ``AllXML/<File Name>.xml`` (OsiriX plist) and
    ``INbreast.csv``. Patient 0's left breast is BI-RADS 5, patient 1's right 4a; one ROI is a point."""
    root, rng = Path(root), np.random.default_rng(seed)
    rows, truth = [], []
    for p in range(patients):
        patient = _hex(rng, 16)
        for side in "LR":
            birads = "5" if (p == 0 and side == "L") else "4a" if (p == 1 and side == "R") else "1"
            for view in VIEWS:
                name = f"{int(rng.integers(20_000_000, 53_000_000))}"
                img, mask, centre, radius, _ = draw_image(rng, side, view, birads != "1", shape)
                file_view = "ML" if view == "MLO" else view
                write_dicom(root / "AllDICOMs" / f"{name}_{patient}_MG_{side}_{file_view}_ANON.dcm", _stored(img, 14),
                            {"BitsStored": 14, "ImageLaterality": side})
                if centre:
                    y, x = centre
                    if p == 1 and view == "CC":  # a point lesion: one point
                        pts = [f"({x:.2f}, {y:.2f})"]
                    else:
                        pts = [f"({x + radius * np.cos(t):.2f}, {y + radius * np.sin(t):.2f})"
                               for t in np.linspace(0, 2 * np.pi, 9)[:-1]]
                    roi = {"Name": "Mass", "NumberOfPoints": len(pts), "Point_px": pts, "Point_mm": pts}
                    (root / "AllXML").mkdir(parents=True, exist_ok=True)
                    with open(root / "AllXML" / f"{name}.xml", "wb") as f:
                        plistlib.dump({"Images": [{"ImageIndex": 0, "NumberOfROIs": 1, "ROIs": [roi]}]}, f)
                rows.append({"Patient ID": "", "Patient age": 50 + p, "Laterality": side, "View": view,
                             "Acquisition date": "2008", "File Name": name, "ACR": 1 + p % 4, "Bi-Rads": birads})
                truth.append(_truth_row("inbreast", patient, name, side, view, birads in ("4c", "5", "6"), mask,
                                        centre, official_split="", birads=birads))
    pd.DataFrame(rows).to_csv(root / "INbreast.csv", sep=";", index=False)
    return pd.DataFrame(truth)


# ---- mini-MIAS -----------------------------------------------------------------------------------

def write_mias(root, patients: int = 3, seed: int = 0, shape=(320, 320)) -> pd.DataFrame:
    """``mdb001.pgm``.. film scans (pairs per patient, even numbers left, all MLO, each film zero-padded to
    a square as mini-MIAS's are) and ``Info.txt``, whose centres count from the bottom-left corner. Image 1
    has a malignant mass and a second, benign entry; image 3 is a spread calcification without a centre;
    the rest are NORM."""
    root, rng = Path(root), np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines, truth = ["mini-MIAS database: reference, tissue, class, severity, x, y, radius", ""], []
    for n in range(1, 2 * patients + 1):
        ref, side = f"mdb{n:03d}", "L" if n % 2 == 0 else "R"
        pad = shape[1] // 10  # the film is narrower than the square scan: zero padding on both sides
        img, mask, centre, radius, _ = draw_image(rng, side, "MLO", n == 1, (shape[0], shape[1] - 2 * pad), film=True)
        img, mask = np.pad(img, ((0, 0), (pad, pad))), np.pad(mask, ((0, 0), (pad, pad)))
        centre = (centre[0], centre[1] + pad) if centre else None
        cv2.imwrite(str(root / f"{ref}.pgm"), to_film_bits(img, 8))
        if n == 1:
            y, x = centre
            lines.append(f"{ref} G CIRC M {round(x)} {shape[0] - round(y)} {round(radius)}")
            lines.append(f"{ref} G MISC B {round(x)} {shape[0] - round(y)} 3")
        elif n == 3:
            lines.append(f"{ref} D CALC B")
        else:
            lines.append(f"{ref} F NORM")
        truth.append(_truth_row("mias", f"mias{(n + 1) // 2:03d}", ref, side, "MLO", n == 1, mask, centre,
                                official_split=""))
    (root / "Info.txt").write_text("\n".join(lines) + "\n")
    return pd.DataFrame(truth)


WRITERS = {"vindr": write_vindr, "cbis-ddsm": write_cbis, "cmmd": write_cmmd, "inbreast": write_inbreast,
           "mias": write_mias}


def snapshot(folder) -> dict:
    """Every file below ``folder`` with its size and modification time (to prove a source untouched)."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


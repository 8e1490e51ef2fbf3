"""Real-size synthetic mammograms for the benchmarks (3328x2560, 12-bit, like the most common RSNA machine)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mammo_utils import dicom, synthetic

CACHE = Path(__file__).resolve().parent / "_data"


def realsize_files(syntax: str, n: int = 8, shape=(3328, 2560), seed: int = 0) -> list[Path]:
    """``n`` DICOM files of one transfer syntax (``j2k`` or ``jpeg_lossless``), written once and cached."""
    out = CACHE / f"realsize_{shape[0]}x{shape[1]}" / f"{syntax}_images" / "1"  # the RSNA layout: <split>_images/<patient>/
    paths = [out / f"{i}.dcm" for i in range(n)]
    if all(p.exists() for p in paths):
        return paths
    out.mkdir(parents=True, exist_ok=True)
    machine = next(m for m in synthetic.MACHINES if m.machine_id == 49)
    for i, path in enumerate(paths):
        rng = np.random.default_rng([seed, i])
        breast = synthetic.breast_params(rng, 0.4, False)
        a, _ = synthetic.draw_breast(rng, shape, "CC" if i % 2 else "MLO", 0.4, breast)
        if i % 2:
            a = a[:, ::-1]
        stored, attrs = synthetic.to_stored(a, machine, rng)
        attrs.update(BitsStored=12, PhotometricInterpretation="MONOCHROME2" if i % 3 else "MONOCHROME1")
        if attrs["PhotometricInterpretation"] == "MONOCHROME1":
            stored = (4095 - stored).astype(np.uint16)
            attrs["WindowCenter"] = [4095 - c for c in attrs["WindowCenter"]]
        dicom.write_dicom(path, stored, attrs, syntax)
    return paths

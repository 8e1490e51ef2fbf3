"""A folder to upload as a Kaggle dataset: wheels, the run's checkpoints, notebook 06 wired to them.

Kaggle's inference notebooks run with the internet off, so everything is installed with
``pip install --no-index --find-links <bundle>/wheels``. Kaggle's image already has torch, timm,
OpenCV, pandas and scikit-learn; the bundle brings mammo_utils and the DICOM decoders it lacks.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

from .. import paths

log = logging.getLogger(__name__)

# decoders and the PNG deflater Kaggle's image lacks
KAGGLE_EXTRA_WHEELS = ["imagecodecs", "isal", "dicomsdl", "pylibjpeg", "pylibjpeg-openjpeg", "pylibjpeg-libjpeg",
                       "python-gdcm", "pydicom"]


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True)


def build_wheels(out: Path, with_deps: bool = True, python_version: str = "3.11",
                 platform: str = "manylinux2014_x86_64") -> list[Path]:
    """mammo_utils' own wheel, plus (``with_deps``) binary wheels of the decoders for Kaggle's Python."""
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    with tempfile.TemporaryDirectory() as tmp:  # setuptools writes build/ and egg-info beside what it builds
        src = Path(tmp) / "src"
        shutil.copytree(paths.PROJECT_ROOT / "mammo_utils", src / "mammo_utils",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for name in ("pyproject.toml", "README.md", "LICENSE.txt"):
            shutil.copy2(paths.PROJECT_ROOT / name, src / name)
        _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(src))
    if with_deps:
        _pip("download", "--only-binary=:all:", "--python-version", python_version, "--platform", platform,
             "-d", str(out), *KAGGLE_EXTRA_WHEELS)
    # The list notebook 06 installs (decoders first, then mammo-workbook itself with --no-deps).
    (out / "requirements.txt").write_text("\n".join(KAGGLE_EXTRA_WHEELS if with_deps else []) + "\n")
    return sorted(out.glob("*.whl"))


def copy_run(run: Path, out: Path) -> list[Path]:
    """best.pt, threshold.json and config.json of the run's current folds (:meth:`Run.folds`: nothing set
    aside under ``previous/``, no fold of another recipe), into ``out/train/fold<k>/``."""
    from ..learn.runs import Run

    copied = []
    for fold in Run(run).folds() or Run(run).checkpoints():  # the second raises: nothing trained
        dest = paths.train_dir(out, fold.k)
        dest.mkdir(parents=True, exist_ok=True)
        for name in (paths.BEST, paths.THRESHOLD, paths.CONFIG):
            if (fold.folder / name).exists():
                shutil.copy2(fold.folder / name, dest / name)
                copied.append(dest / name)
    return copied


def write_submission_notebook(out: Path, dataset_name: str) -> Path:
    """Notebook 06 with its parameters pointing at this bundle as an attached Kaggle dataset."""
    nb = nbformat.read(paths.SOURCE_NOTEBOOKS / "06_submission.ipynb", as_version=4)
    base = f"/kaggle/input/{dataset_name}"
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            cell.source = re.sub(r"^run_dirs = .*$", f'run_dirs = ["{base}/run/train"]', cell.source, flags=re.M)
            cell.source = re.sub(r"^wheels_dir = .*$", f'wheels_dir = "{base}/wheels"', cell.source, flags=re.M)
    path = out / "06_submission.ipynb"
    nbformat.write(nb, path)
    return path


def build_bundle(run, out, with_deps: bool = True, dataset_name: str = "mammo-workbook-bundle") -> Path:
    run, out = Path(run), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    wheels = build_wheels(paths.bundle_wheels(out), with_deps)
    copied = copy_run(run, paths.bundle_run(out))
    nb = write_submission_notebook(out, dataset_name)
    (out / "dataset-metadata.json").write_text(json.dumps(
        {"title": dataset_name, "id": f"YOUR_KAGGLE_USERNAME/{dataset_name}", "licenses": [{"name": "apache-2.0"}]},
        indent=2))
    (out / "README.txt").write_text(
        "Upload this folder as a Kaggle dataset (kaggle datasets create -p .), attach it and the competition\n"
        f"data to a notebook, and run {nb.name}: it installs mammo_utils from wheels/ with --no-index and\n"
        "predicts with every checkpoint under run/train.\n")
    log.info("bundle: %d wheels, %d run files, %s", len(wheels), len(copied), nb)
    return out

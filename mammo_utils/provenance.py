"""What produced an output: the git commit (and whether the tree had uncommitted changes) and the
versions of the libraries that decide the numbers. Recorded in config.json, checkpoints and summary.json."""
from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mammo-workbook", "torch", "torchvision", "timm", "numpy", "pydicom", "imagecodecs", "dicomsdl", "pylibjpeg",
            "pylibjpeg-openjpeg", "python-gdcm", "pillow", "opencv-python-headless", "isal")


def _git(*args: str) -> str | None:
    try:
        res = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


@lru_cache(maxsize=1)
def provenance() -> dict:
    """{"git_commit", "git_dirty", "python", "versions": {package: version}}; None where unknown."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None,
            "python": platform.python_version(), "versions": versions}

"""The Kaggle bundle builds, and mammo_utils installs from it into a fresh venv with --no-index."""
import os
import subprocess
import venv

import nbformat
import pytest
import torch


@pytest.fixture
def fake_run(tmp_path):
    fold = tmp_path / "run" / "train" / "fold0"
    fold.mkdir(parents=True)
    torch.save({"model": {}, "threshold": 0.3}, fold / "best.pt")
    (fold / "threshold.json").write_text('{"threshold": 0.3, "aggregate": "mean"}')
    return tmp_path / "run"


def test_bundle_builds_and_installs_offline(fake_run, tmp_path):
    from mammo_utils import paths
    from mammo_utils.workflow.bundle import build_bundle

    before = sorted(p.name for p in paths.PROJECT_ROOT.iterdir())
    out = build_bundle(fake_run, tmp_path / "bundle", with_deps=False, dataset_name="my-bundle")
    assert sorted(p.name for p in paths.PROJECT_ROOT.iterdir()) == before  # nothing written into the source tree
    wheels = list((out / "wheels").glob("mammo_workbook-*.whl"))
    assert len(wheels) == 1
    assert (out / "run" / "train" / "fold0" / "best.pt").exists()
    assert (out / "run" / "train" / "fold0" / "threshold.json").exists()
    nb = nbformat.read(out / "06_submission.ipynb", as_version=4)
    params = next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert 'run_dirs = ["/kaggle/input/my-bundle/run/train"]' in params
    assert 'wheels_dir = "/kaggle/input/my-bundle/wheels"' in params
    assert (out / "wheels" / "requirements.txt").exists()

    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # a fresh environment sees only its own packages
    py = env / "bin" / "python"
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-index", "--find-links", out / "wheels",
                    "-r", out / "wheels" / "requirements.txt"], check=True, env=clean)  # notebook 06's two steps
    res = subprocess.run([py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--find-links", out / "wheels",
                          "mammo-workbook"], check=True, env=clean, capture_output=True, text=True)
    assert "requires" not in res.stderr, res.stderr  # no resolver complaint about notebook tooling
    # the bare venv has no numpy (Kaggle's image does): import what needs nothing else, from the venv
    res = subprocess.run([py, "-c", "import mammo_utils, mammo_utils.paths, mammo_utils.errors; "
                          "print(mammo_utils.__file__)"], capture_output=True, text=True, cwd=tmp_path, env=clean)
    assert res.returncode == 0 and str(env) in res.stdout, res.stderr
    # and the wheel holds every module of the package
    import zipfile

    from mammo_utils import paths

    source = {p.relative_to(paths.PROJECT_ROOT).as_posix() for p in (paths.PROJECT_ROOT / "mammo_utils").rglob("*.py")}
    assert source <= set(zipfile.ZipFile(wheels[0]).namelist())
    res = subprocess.run([py, "-c", "import importlib.util as u; print(u.find_spec('mammo_utils').origin)"],
                         capture_output=True, text=True, cwd=tmp_path, check=True, env=clean)
    assert str(env) in res.stdout

"""Environment descriptions agree; the README test command is what CI runs."""
import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def names(reqs):
    return {re.split(r"[<>=!~ \[]", r.strip())[0].lower() for r in reqs if r.strip() and not r.strip().startswith("-")}


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = names(project["dependencies"]).union(*(names(v) for v in project["optional-dependencies"].values()))
    yml = (ROOT / "environment.yml").read_text()
    pip_section = yml.split("- pip:", 1)[1]
    pip_lines = re.findall(r"^\s+- (\S.*)$", pip_section, flags=re.M)
    assert names(pip_lines) == declared


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make test" in ci
    assert "make demo" in readme


def test_license_is_apache():
    assert "Apache License" in (ROOT / "LICENSE.txt").read_text()


def test_core_dependencies_are_what_inference_needs():
    """Kaggle installs the core only: notebook tooling must not be a core requirement."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = names(project["dependencies"])
    assert not core & {"jupyterlab", "papermill", "ipykernel", "pytest", "ipywidgets", "distributed", "mlflow"}
    assert {"lab", "test", "cluster"} <= set(project["optional-dependencies"])


def test_readme_commands_work_as_written():
    """One form for commands: `.venv/bin/mammo COMMAND` (the venv's console script) or make targets;
    every command it names exists, and the console script is installed."""
    import subprocess
    import sys

    readme = (ROOT / "README.md").read_text()
    assert not re.search(r"(^|[\s`])python -m mammo_utils", readme, flags=re.M), "use .venv/bin/mammo"
    script = Path(sys.executable).parent / "mammo"
    assert script.exists()
    usage = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True).stdout
    for command in set(re.findall(r"\.venv/bin/mammo ([a-z-]+)", readme)):
        assert command in usage, command

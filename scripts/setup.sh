#!/usr/bin/env bash
# Idempotent set-up: .venv with torch first, then the project (editable) and a Jupyter kernel.
# A second run with unchanged requirements only compares a hash and returns in a second.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
VENV=.venv
STAMP="$VENV/.requirements.sha256"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"

# The browser test drives Debian's Chromium (tools that download their own browser cannot reach their sites).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
        echo "[setup] installing chromium and chromium-driver (apt-get) for the browser test"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
            >/tmp/mammo-apt.log 2>&1 || echo "[setup] could not install chromium (see /tmp/mammo-apt.log); the browser test will be skipped"
    else
        echo "[setup] chromium/chromedriver missing and apt-get unavailable: the browser test will be skipped"
    fi
fi

if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    exit 0
fi

echo "[setup] creating/updating $VENV (requirements changed or first run)"
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
quiet() { grep -v -e "is ignored: it is neither" -e "^WARNING: Location" || true; }  # pip's local-index noise
"${PIP[@]}" install --upgrade pip wheel setuptools 2>&1 | quiet
# torch first: this exact pair is a matched CUDA build that also runs on CPU.
"${PIP[@]}" install "torch==2.14.1" "torchvision==0.29.1" 2>&1 | quiet
# setuptools' boxed "Editable installation" notice is information, not a problem: silenced at its source.
PYTHONWARNINGS="ignore::UserWarning" "${PIP[@]}" install -e ".[lab,cluster,test]" 2>&1 | quiet
"$VENV/bin/python" -c "import torch, torchvision, timm, pydicom, dicomsdl, gdcm, cv2" || { echo "[setup] import check failed"; exit 1; }
"$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (mammo-workbook)" >/dev/null
# The kernel's log shows errors only: its "running over TCP without encryption" notice (a local kernel,
# on the loopback interface) printed once per notebook of every pipeline run, and looked like a problem.
"$VENV/bin/python" - <<'PY'
import json, sys
from pathlib import Path
spec = Path(sys.prefix) / "share/jupyter/kernels/python3/kernel.json"
k = json.loads(spec.read_text())
if "--IPKernelApp.log_level=ERROR" not in k["argv"]:
    k["argv"].append("--IPKernelApp.log_level=ERROR")
spec.write_text(json.dumps(k, indent=1))
PY
echo "$want" > "$STAMP"
echo "[setup] done"

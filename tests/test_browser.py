"""The patient viewer in a real browser: JupyterLab on 127.0.0.1, headless Chromium driven by selenium.

It opens a notebook that shows the viewer, runs it, moves the window-width slider with the keyboard,
and requires the displayed image to change (compared by screenshot pixels of the image widget).
Needs Debian's chromium and chromium-driver, which the set-up installs.
"""
import json
import os
import secrets
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from conftest import CHROMEDRIVER, CHROMIUM, free_port, start_server, wait_for

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="chromium/chromedriver missing: `make setup` installs them (apt-get)")


def viewer_notebook(path, data):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(
        "from mammo_utils.explore.viewer import PatientViewer\n"
        f"browser = PatientViewer({str(data)!r}, display_px=256, tile_px=(240, 192))\n"
        "browser.show(interactive=True)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def jupyterlab(tmp_path, tiny_data):
    root = tmp_path / "lab"
    root.mkdir()
    viewer_notebook(root / "viewer.ipynb", tiny_data)
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws")}
    env.pop("MPLBACKEND", None)
    url = f"http://127.0.0.1:{port}"
    proc = start_server(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
         "--ServerApp.open_browser=False", "--allow-root"],
        f"{url}/api/status?token={token}", tmp_path / "lab.log", "JupyterLab", timeout=90, env=env)
    yield url, token
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def image_pixels(driver):
    from selenium.webdriver.common.by import By

    el = driver.find_element(By.CSS_SELECTOR, ".mammo-viewer-image")
    png = el.screenshot_as_png
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


def test_window_slider_changes_the_displayed_image(jupyterlab, chrome):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, token = jupyterlab
    chrome.get(f"{url}/lab/tree/viewer.ipynb?token={token}")
    wait_for(lambda: chrome.execute_script(
        "const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        "const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
        "return !!k && k.status === 'idle';"), timeout=90, what="the notebook and its kernel")
    chrome.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    wait_for(lambda: chrome.find_element(By.CSS_SELECTOR, ".mammo-viewer-image").size["height"] > 50,
             timeout=120, what="the viewer image")
    time.sleep(1)
    before = image_pixels(chrome)
    width_before = float(chrome.find_element(By.CSS_SELECTOR, ".mammo-width .widget-readout").text)
    assert before.shape[0] > 50 and before.std() > 5, "the viewer shows a mammogram"

    handle = chrome.find_element(By.CSS_SELECTOR, ".mammo-width .noUi-handle")
    chrome.execute_script("arguments[0].scrollIntoView({block: 'center'})", handle)
    handle.click()
    for _ in range(30):
        handle.send_keys(Keys.PAGE_DOWN)  # a much narrower window: more contrast
    readout = float(chrome.find_element(By.CSS_SELECTOR, ".mammo-width .widget-readout").text)

    def kernel_width():  # the title reports the window the kernel applied
        title = chrome.find_element(By.CSS_SELECTOR, ".widget-html").text
        return float(title.split("w=")[1].split(")")[0]) if "w=" in title else None

    wait_for(lambda: kernel_width() is not None and abs(kernel_width() - readout) < 1, timeout=60,
             what="the kernel to receive the new width")
    def changed_image():
        a = image_pixels(chrome)
        return [a] if a.shape == before.shape and np.abs(a.astype(int) - before).mean() > 2 else None

    after = wait_for(changed_image, timeout=60, what="the image to change")[0]
    diff = np.abs(after.astype(int) - before.astype(int))
    changed = (diff.max(axis=2) > 8).mean()
    print(json.dumps({"width_before": width_before, "width_after": readout, "mean_abs_pixel_change": round(float(diff.mean()), 2),
                      "share_of_pixels_changed": round(float(changed), 3)}))
    assert diff.mean() > 2 and changed > 0.1

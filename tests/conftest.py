"""Shared fixtures: a tiny synthetic RSNA dataset written once per session by our own generator."""
import os
import shutil
import tempfile
import time

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # two test processes on two cores: one compute thread each
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# Tracking is on in the tests, as in real runs: into one store for the session (a new SQLite store costs
# seconds to set up), which every test's runs, kernels and torchrun processes share.
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp(prefix='mammo-mlflow-')}/mlflow.db")

TINY = dict(patients=16, seed=1, size=(192, 160), test_patients=4, cancer_rate=0.4, jobs=2, progress=False)


def made_once(tmp_path_factory, name: str, make):
    """A read-only input made once per test run, shared by the pytest-xdist workers (a file lock lets the
    first make it; the others wait and reuse it). Tests copy it before changing anything in it."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own
    out = root / name
    with FileLock(f"{out}.lock"):
        if not (root / f"{name}.done").exists():
            shutil.rmtree(out, ignore_errors=True)
            make(out)
            (root / f"{name}.done").touch()
    return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """~75 DICOMs of every machine kind; returns the folder."""
    from mammo_utils.synthetic import write_dataset

    return made_once(tmp_path_factory, "synthetic", lambda out: write_dataset(out, **TINY))


@pytest.fixture(scope="session")
def tiny_png(tiny_data, tmp_path_factory):
    """``tiny_data``'s training images preprocessed at 64x32 (what the training tests learn from), made once:
    copy it (``shutil.copytree``) into a test's own folder."""
    from mammo_utils.prepare.preprocess import PreprocessConfig
    from mammo_utils.prepare.runner import run_preprocess

    def make(out):
        run_preprocess(tiny_data, "train", out, PreprocessConfig(size=(64, 32)), jobs=2, progress=False)

    return made_once(tmp_path_factory, "png_64x32", make)


@pytest.fixture(scope="session")
def tiny_truth(tiny_data):
    import pandas as pd

    return pd.read_csv(tiny_data / "synthetic_truth.csv")


def pytest_collection_modifyitems(config, items):
    """The modules holding ``slow`` tests (whole pipelines, sweeps, clusters) run first, so that the two
    test processes of ``make test`` (``--no-loadscope-reorder``) share them instead of one process starting
    the longest module last while the other sits idle. Otherwise the collection order stays."""
    def module(item):
        return getattr(getattr(item, "module", None), "__name__", item.nodeid.split("::")[0])

    slow_modules = {module(item) for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: module(item) not in slow_modules)


# ---- a real browser (Debian's chromium and chromium-driver; the set-up installs them) -------------------

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def chrome(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1600,1100"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def wait_for(fn, timeout=60, every=0.5, what="condition"):
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        try:
            value = fn()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - the page is still loading
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")


# ---- local servers the tests start (JupyterLab, mlflow server) -----------------------------------------

def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(command, health_url: str, log_path, what: str, timeout: float = 120, env=None):
    """Start ``command`` in its own process group and wait until ``health_url`` answers; fail the test
    with the server's log if it does not. Returns the process."""
    import signal
    import subprocess
    import urllib.request

    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(log_path, "w"), env=env,
                            start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(health_url, timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"{what} did not start:\n" + open(log_path).read()[-3000:])

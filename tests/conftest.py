"""Shared fixtures: a tiny synthetic RSNA dataset written once per session by our own generator."""
import os
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tracking is on in the tests, as in real runs: into one store for the session (a new SQLite store costs
# seconds to set up), which every test's runs, kernels and torchrun processes share.
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp(prefix='mammo-mlflow-')}/mlflow.db")

TINY = dict(patients=16, seed=1, size=(192, 160), test_patients=4, cancer_rate=0.4, jobs=2, progress=False)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """~75 DICOMs of every machine kind; returns the folder."""
    from mammo_utils.synthetic import write_dataset

    out = tmp_path_factory.mktemp("synthetic")
    write_dataset(out, **TINY)
    return out


@pytest.fixture(scope="session")
def tiny_truth(tiny_data):
    import pandas as pd

    return pd.read_csv(tiny_data / "synthetic_truth.csv")

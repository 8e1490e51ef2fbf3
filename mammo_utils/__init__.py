"""mammo-workbook: shared code for the RSNA screening-mammography notebooks.

Public names are importable from the package face (``from mammo_utils import read_image``); they
load their module on first use, so ``import mammo_utils`` stays light (no torch for preprocessing).
"""
from importlib import import_module

__version__ = "0.1.0"

_PUBLIC = {
    "read_image": "dicom", "read_dicom": "dicom", "read_metadata": "dicom", "DicomReadError": "dicom",
    "write_dicom": "dicom",
    "segment_breast": "crop", "breast_bbox": "crop", "orient": "crop", "resize_pad": "crop",
    "PreprocessConfig": "preprocess", "run_preprocess": "preprocess", "preprocess_file": "preprocess",
    "read_manifest": "tables",
    "read_table": "tables", "UserError": "errors",
    "make_folds": "sampling", "BalancedBatchSampler": "sampling",
    "TrainConfig": "config", "train": "train", "build_model": "models", "load_model": "checkpoint",
    "pfbeta": "metrics", "aggregate_breasts": "metrics",
    "predict": "inference", "make_submission": "inference",
    "write_dataset": "synthetic", "run_pipeline": "pipeline",
}


def __getattr__(name):
    if name in _PUBLIC:
        module = import_module(f".{_PUBLIC[name]}", __name__)
        return module if name == _PUBLIC[name] else getattr(module, name)
    raise AttributeError(f"module 'mammo_utils' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_PUBLIC))

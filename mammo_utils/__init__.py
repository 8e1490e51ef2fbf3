"""mammo-workbook: shared code for the RSNA screening-mammography notebooks.

Public names are importable from the package face (``from mammo_utils import read_image``); they
load their module on first use, so ``import mammo_utils`` stays light (no torch for preprocessing).
"""
from importlib import import_module

__version__ = "0.1.0"

_PUBLIC = {
    "read_image": "dicom", "read_dicom": "dicom", "read_metadata": "dicom", "DicomReadError": "dicom",
    "write_dicom": "dicom",
    "segment_breast": "prepare.crop", "breast_bbox": "prepare.crop", "orient": "prepare.crop", "resize_pad": "prepare.crop",
    "PreprocessConfig": "prepare.preprocess", "run_preprocess": "prepare.runner", "preprocess_file": "prepare.preprocess",
    "read_manifest": "tables",
    "read_table": "tables", "UserError": "errors",
    "make_folds": "learn.sampling", "BalancedBatchSampler": "learn.sampling",
    "TrainConfig": "learn.config", "train": "learn.train", "build_model": "learn.models", "load_model": "learn.checkpoint",
    "pfbeta": "metrics", "aggregate_breasts": "metrics",
    "predict": "judge.inference", "make_submission": "judge.inference",
    "write_dataset": "synthetic", "run_pipeline": "workflow.pipeline",
}


def __getattr__(name):
    if name in _PUBLIC:
        module = import_module(f".{_PUBLIC[name]}", __name__)
        return module if name == _PUBLIC[name] else getattr(module, name)
    raise AttributeError(f"module 'mammo_utils' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_PUBLIC))

"""Synthetic screening mammograms in the exact RSNA layout: :mod:`.anatomy` draws one image,
:mod:`.dataset` plans and writes a whole dataset (see its docstring for the layout), :mod:`.phantoms` draws
the hard cases of breast finding."""
from ..tables import TEST_COLUMNS, TRAIN_COLUMNS
from .anatomy import (
    MACHINE_WEIGHTS,
    MACHINES,
    Machine,
    breast_params,
    burn_in,
    draw_breast,
    draw_lesion,
    draw_vascular_calcs,
    lesion_position,
    smooth_noise,
    to_stored,
    truth_mask,
)
from .dataset import (
    MIN_SYNTH_PX,
    PRESETS,
    check_synthetic_target,
    default_test_patients,
    make_image,
    plan_dataset,
    write_dataset,
)

__all__ = [
    "MACHINES", "MACHINE_WEIGHTS", "MIN_SYNTH_PX", "Machine", "PRESETS", "TEST_COLUMNS", "TRAIN_COLUMNS",
    "breast_params", "burn_in", "check_synthetic_target", "default_test_patients", "draw_breast", "draw_lesion",
    "draw_vascular_calcs", "lesion_position", "make_image", "plan_dataset", "smooth_noise",
    "to_stored", "truth_mask", "write_dataset",
]

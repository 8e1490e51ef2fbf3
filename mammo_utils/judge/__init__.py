"""Judge: predictions from a run's checkpoints, per-breast metrics with intervals, thresholds, stacking and
paired comparisons between runs. Imports everything below it, never ``explore`` or ``workflow``."""

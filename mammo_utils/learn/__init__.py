"""Learn: folds and the locked holdout, datasets and loaders, model recipes, the training loop, checkpoints,
DDP. Imports the ground floor, ``dicom`` and ``prepare``."""

"""Prepare: DICOM -> cropped, windowed PNG plus a manifest (settings, per-file job, runner, crop, PNG codec,
crop quality). Imports the ground floor and ``dicom`` only."""

"""Workflow: whole jobs built from the stages: the papermill pipeline, sweeps, the report and the Kaggle
bundle. Nothing imports it but the CLI."""

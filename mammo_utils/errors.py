"""Expected errors: bad input, missing files, bad parameters. The CLI prints them as one line and
exits 2; anything else is a bug and keeps its traceback."""
from __future__ import annotations


class UserError(ValueError):
    """A problem the user can fix; the message names the file, row, parameter or value and the fix."""


class CheckpointError(UserError):
    """A checkpoint file is missing, corrupt, truncated or does not match the run."""

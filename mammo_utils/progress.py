"""Progress bars that read well wherever the output goes.

In a terminal or a notebook: tqdm's live bar. Sent to a file or a pipe (CI, ``make demo > log``): a
bar redrawn with carriage returns becomes one very long line that later prints get glued onto, so
there each update is a line of its own, at most one every ``LOG_INTERVAL_S`` seconds, and a bar that
would vanish (``leave=False``) prints nothing more when it closes.
"""
from __future__ import annotations

import sys

from tqdm import tqdm as _plain_tqdm

LOG_INTERVAL_S = 30.0


class LineBar(_plain_tqdm):
    """tqdm that writes each refresh as a whole line (for logs)."""

    def display(self, msg=None, pos=None):
        if msg == "":  # closing a leave=False bar: nothing to erase in a log
            return True
        self.fp.write((msg if msg is not None else self.__str__()).rstrip() + "\n")
        self.fp.flush()
        return True


def in_notebook() -> bool:
    return "ipykernel" in sys.modules


def bar(iterable=None, **kwargs):
    """``tqdm(iterable, **kwargs)`` as fits the output: live in a terminal or notebook, lines in a log."""
    if in_notebook():
        from tqdm.auto import tqdm

        return tqdm(iterable, **kwargs)
    if sys.stderr.isatty():
        return _plain_tqdm(iterable, **kwargs)
    kwargs.setdefault("mininterval", LOG_INTERVAL_S)
    return LineBar(iterable, ascii=True, ncols=100, **kwargs)

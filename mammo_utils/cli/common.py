"""What every command shares: the help formatter, argument types, and the data-folder option."""
from __future__ import annotations

import argparse

PRESET_NAMES = ["default", "hard", "hard_metadata", "hard_control"]  # synthetic.dataset.PRESETS (tested to agree)


def size_arg(text: str):
    from ..paths import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def jobs_arg(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if n == 0 or n < -1:
        raise argparse.ArgumentTypeError(f"jobs must be a positive number of processes or -1 (all CPUs), got {n}")
    return n


def positive(kind):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
        return v
    return parse


def share_arg(text: str) -> float:
    v = float(text)
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"must be a share between 0 and 1, got {v}")
    return v


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option with its default; descriptions and epilogs keep their line breaks."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose epilog is made only when help is shown (``epilog_fn``)."""

    def __init__(self, *args, epilog_fn=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.epilog_fn = epilog_fn

    def format_help(self) -> str:
        if self.epilog_fn is not None:
            self.epilog = self.epilog_fn()
        return super().format_help()


def data_arg(s, required=True, default=None):
    """The ``--data-dir`` option every command that reads a dataset takes."""
    s.add_argument("--data-dir", "--data", dest="data_dir", required=required, default=default,
                   help="folder in the RSNA layout: <split>.csv + <split>_images/<patient_id>/<image_id>.dcm")

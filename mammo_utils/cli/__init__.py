"""Command line: ``python -m mammo_utils <stage> ...``; options carry the notebooks' parameter names.

Expected errors (bad input, missing files, bad parameters) print one line and exit 2; a bug keeps
its traceback. Older option names (``--size``, ``--runs``...) still work as aliases.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys

from . import data, judge, learn, prepare, workflow
from .common import HelpFormatter, Parser

COMMAND_MODULES = (data, prepare, learn, judge, workflow)  # each registers its own commands, in this order


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mammo_utils", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    def command(name: str, help: str, epilog_fn=None):
        return sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".", epilog_fn=epilog_fn,
                              formatter_class=HelpFormatter)

    for module in COMMAND_MODULES:
        module.register(command)
    return p


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds `finally` blocks, which shut worker pools down


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning on the command line is one line that says what is wrong, not where in the code."""
    return f"warning: {message}\n"


def main(argv=None) -> int:
    import warnings

    from ..dicom import DicomReadError
    from ..errors import UserError

    args = build_parser().parse_args(argv)
    warnings.formatwarning = _one_line_warning
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args) or 0)
    except (UserError, DicomReadError, FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError,
            IsADirectoryError, FloatingPointError) as exc:  # FloatingPointError: training diverged
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

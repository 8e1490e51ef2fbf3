"""``python -m mammo_utils``: the command line (:mod:`mammo_utils.cli`)."""
import sys

from mammo_utils.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m sage_queue``: the command line tool (see ``sage_queue.cli``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

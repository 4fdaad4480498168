"""``python -m sluiceway``: the same as the ``sluiceway`` command."""

import sys

from .cli import main

sys.exit(main())

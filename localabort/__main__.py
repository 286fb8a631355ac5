"""``python -m localabort``: the same as the ``localabort`` command."""

import sys

from .cli import main

sys.exit(main())

"""``python -m agent``: the same as ``node-agent``."""

import sys

from .cli import main

sys.exit(main())

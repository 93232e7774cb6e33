"""``python -m apiusage report``."""

import sys

from apiusage.cli import main

sys.exit(main())

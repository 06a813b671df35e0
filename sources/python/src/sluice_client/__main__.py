"""``python3 -m sluice_client load FILE...``: the command line (see the package docstring)."""

import sys

from sluice_client import main

sys.exit(main())

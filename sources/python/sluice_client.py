#!/usr/bin/env python3
"""Compatibility entry point: the Sluice client is the package ``src/sluice_client``.

``pip install sources/python`` installs it (package ``sluice-client``, with ``py.typed``).
This file keeps the older ways working from a checkout: ``python3 sources/python/sluice_client.py
load FILE...`` and ``import sluice_client`` with ``sources/python`` on ``sys.path``. Imported, it
puts ``src`` first on ``sys.path`` and hands over to the package (``sys.modules`` then holds
the package under the name ``sluice_client``), so both ways run the same code.
"""

import os
import sys

_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)

if __name__ == "__main__":
    from sluice_client import main

    sys.exit(main())
else:
    del sys.modules[__name__]
    import sluice_client as _package  # noqa: E402  (the package under src, found first)

    sys.modules[__name__] = _package

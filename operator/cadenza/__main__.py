"""``python -m cadenza`` is the ``cadenza`` command."""

from __future__ import annotations

import sys

from cadenza.cli import main

sys.exit(main())

"""``python -m cadenza_sidecar``: the same entry point as the ``cadenza-sidecar`` script."""

from __future__ import annotations

from cadenza_sidecar.cli import main

raise SystemExit(main())

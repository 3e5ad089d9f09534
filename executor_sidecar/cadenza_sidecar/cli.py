"""Command-line entry point of ``cadenza-sidecar`` (and ``python -m cadenza_sidecar``).

Invariant: settings are read once, here, before anything starts; a bad combination of flags ends
the process with status 2 and a message naming the flag, never a traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from cadenza_sidecar import app, collector, flags, logs, settings


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = settings.load(argv)
    except settings.SettingsError as exc:
        flags.build_parser().error(str(exc))
    logs.configure(config.log_level)
    collector.settle()
    return asyncio.run(app.serve(config))

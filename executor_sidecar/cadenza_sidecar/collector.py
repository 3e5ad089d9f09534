"""Python's cyclic garbage collector, set for a sidecar that starts and reports hundreds of runs
a second: the operator's settings (``cadenza/collector.py``, which this package does not import).

Measured at 1,000 runs a second over three sidecars (docs/benchmark.md): with the interpreter's
defaults each sidecar spent a tenth of its CPU collecting (3.2 of 30.6 CPU-seconds, 22 full
collections of up to 100 ms). What a sidecar keeps for long is small (its runs, its spool
index); what it allocates per run is freed by reference counting or soon after, so the young
generation may wait for 10,000 new containers, and what start-up loaded is frozen out of every
later collection.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
"""New container objects between two collections of the youngest generation (default 700)."""


def settle() -> None:
    """Call once, after the imports and before serving."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])

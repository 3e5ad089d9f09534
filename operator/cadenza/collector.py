"""Python's cyclic garbage collector, set for a long-lived replica that holds many objects.

With the interpreter's defaults a collection of the youngest generation starts after 700 new
container objects, and every tenth of those is followed by a collection of the middle one: at
200 runs a second the leader spent 11 % of its CPU collecting (2.3 of 21 CPU-seconds), and each
of its full collections stopped the event loop for up to 171 ms, which is what the slowest
dispatches waited (docs/benchmark.md). Almost everything a replica allocates is freed by
reference counting the moment it is dropped; what survives a young collection is mostly runs
and requests still in flight, which the collector then walks again and again in the older
generations.

- :func:`gc.freeze` once the operator's modules are imported: the modules, classes and
  functions loaded at start live as long as the process, and no collection walks them again.
- The youngest generation is collected after :data:`YOUNG_THRESHOLD` new containers: in-flight
  objects have finished by then and are not promoted, so the older generations grow only with
  what really lives long. The older generations keep the interpreter's ratios (10 and 10), and
  a full collection still waits until what it would walk has grown by a quarter, so cyclic
  garbage is still collected, at most a few seconds later.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
"""New container objects between two collections of the youngest generation (default 700)."""


def settle() -> None:
    """Freeze what is loaded so far and raise the youngest generation's threshold: call once,
    after the imports and before the work."""
    gc.collect()  # what start-up left behind is freed now, not frozen with the rest
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)

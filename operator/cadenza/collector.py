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

Every collection's pause is recorded by generation (:data:`PAUSES`) and served at ``/metrics``
as the histogram ``cadenza_gc_pause_seconds``: a full collection stops the event loop, and
every dispatch waiting then waits with it.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.registry import Collector

YOUNG_THRESHOLD = 10_000
"""New container objects between two collections of the youngest generation (default 700)."""
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Upper bounds, in seconds, of the pause histogram's buckets (and +Inf)."""
GENERATIONS = (0, 1, 2)


class Pauses:
    """How long each collection of this process took, by generation, kept as a histogram.

    The collector calls :meth:`observe` on the thread that allocated, with the GIL held and
    collections off, so a start and its stop always pair and nothing here runs twice at once.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._started = 0.0
        self.counts = {g: [0] * (len(BUCKETS) + 1) for g in GENERATIONS}
        """Per generation, the pauses in each bucket (not cumulative; the last is +Inf)."""
        self.sums = dict.fromkeys(GENERATIONS, 0.0)

    def observe(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = self._clock()
            return
        generation = info.get("generation")
        if generation not in self.sums:
            return
        pause = self._clock() - self._started
        self.sums[generation] += pause
        bucket = next((i for i, bound in enumerate(BUCKETS) if pause <= bound), len(BUCKETS))
        self.counts[generation][bucket] += 1


PAUSES = Pauses()


class PauseCollector(Collector):
    """Serves :data:`PAUSES` (or ``pauses``) as ``cadenza_gc_pause_seconds{generation}``."""

    def __init__(self, pauses: Pauses = PAUSES) -> None:
        self._pauses = pauses

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "cadenza_gc_pause_seconds",
            "Pauses of this process for Python's cyclic garbage collector, by generation",
            labels=["generation"],
        )
        for generation in GENERATIONS:
            counts, running = self._pauses.counts[generation], 0
            buckets = []
            for bound, count in zip([*map(str, BUCKETS), "+Inf"], counts, strict=True):
                running += count
                buckets.append((bound, running))
            family.add_metric([str(generation)], buckets, self._pauses.sums[generation])
        yield family


def settle() -> None:
    """Freeze what is loaded so far, raise the youngest generation's threshold and record the
    pauses: call once, after the imports and before the work."""
    if PAUSES.observe not in gc.callbacks:
        gc.callbacks.append(PAUSES.observe)
    gc.collect()  # what start-up left behind is freed now, not frozen with the rest
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)

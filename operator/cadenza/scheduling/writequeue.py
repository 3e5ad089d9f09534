"""Which Tasks' statuses may be written now: two lanes, each with its own rate.

A status that answers a Task created or edited (its ``observedGeneration`` behind the Task's
generation) waits in the *spec* lane; one that only follows firing (next run, counters, the last
run) waits in the *runs* lane. Each lane has its own token bucket, so:

- the writes firing causes stay under the runs lane's rate whatever the fire rate, and
- a Task just applied gets its first status about as fast as Tasks are applied (up to the spec
  lane's rate), instead of queueing behind every firing Task's refresh. Those writes answer the
  users' own writes one for one (coalesced per Task), so they cannot outgrow them.

While the fire path is busy (a crowded tick is being handed over), both lanes share the runs
lane's budget, the spec lane first: a status write costs CPU in the API server, in etcd and in
every replica's watch besides the leader's own, so 200 a second took the cores a crowded tick
needed (docs/benchmark.md), and those statuses can wait some seconds.

Within a lane the least recently written Task comes first (one never written before any
other), and no Task is handed out twice within ``min_interval``. Pure: the caller brings the
clock and says whether writing is allowed at all (the lease) and whether the fire path is busy.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from cadenza.scheduling.keyedheap import KeyedHeap

K = TypeVar("K", bound=Hashable)


class Lane(enum.Enum):
    SPEC = "spec"
    """The status answers a Task created or edited."""
    RUNS = "runs"
    """The status follows what firing changed."""


@dataclasses.dataclass(slots=True)
class _Bucket:
    rate: float
    tokens: float

    def refill(self, seconds: float) -> None:
        self.tokens = min(self.rate, self.tokens + seconds * self.rate)


class WriteQueue(Generic[K]):
    def __init__(
        self,
        *,
        min_interval: float,
        runs_per_second: float,
        spec_per_second: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._min_interval = min_interval
        self._clock = clock
        self._buckets = {
            Lane.SPEC: _Bucket(spec_per_second, spec_per_second),
            Lane.RUNS: _Bucket(runs_per_second, runs_per_second),
        }
        self._waiting: dict[Lane, KeyedHeap[K, float]] = {lane: KeyedHeap() for lane in Lane}
        """Per lane, in the order lanes are served, the keys waiting by their last write: a take
        looks only at what it may hand out now. A key waits in one lane at most."""
        self._last: dict[K, float] = {}
        self._refilled = clock()

    def __len__(self) -> int:
        return sum(len(heap) for heap in self._waiting.values())

    def waiting(self, lane: Lane) -> int:
        return len(self._waiting[lane])

    def lane_of(self, key: K) -> Lane | None:
        return next((lane for lane, heap in self._waiting.items() if key in heap), None)

    def touch(self, key: K, lane: Lane) -> None:
        """``key`` is to be written; a key already waiting keeps its place, unless it moves up
        from the runs lane to the spec lane."""
        if key in self._waiting[Lane.SPEC]:
            return
        runs = self._waiting[Lane.RUNS]
        if key in runs:
            if lane is Lane.RUNS:
                return
            runs.discard(key)
        self._waiting[lane].set(key, self._last.get(key, float("-inf")))

    def forget(self, key: K) -> None:
        for heap in self._waiting.values():
            heap.discard(key)
        self._last.pop(key, None)

    def take(self, may_write: Callable[[], bool], *, busy: bool = False) -> list[K]:
        """The keys to write now, each counted as written now; none while ``may_write`` says
        no; both lanes from the runs lane's budget while ``busy``."""
        now = self._clock()
        elapsed, self._refilled = now - self._refilled, now
        for bucket in self._buckets.values():
            bucket.refill(elapsed)
        chosen: list[K] = []
        for lane, heap in self._waiting.items():
            bucket = self._buckets[Lane.RUNS if busy else lane]
            while bucket.tokens >= 1 and (first := heap.peek()) is not None and may_write():
                key, last = first
                if now - last < self._min_interval:
                    break
                heap.pop()
                self._last[key] = now
                bucket.tokens -= 1
                chosen.append(key)
        return chosen

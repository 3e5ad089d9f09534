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
import heapq
import itertools
import time
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

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
        self._heaps: dict[Lane, list[tuple[float, int, K]]] = {lane: [] for lane in Lane}
        """Per lane, in the order lanes are served, by last write: a take looks only at what it
        may hand out now."""
        self._queued: dict[K, tuple[Lane, int]] = {}
        """Where each waiting key's live heap item is; an item not named here is stale."""
        self._last: dict[K, float] = {}
        self._waiting: Counter[Lane] = Counter()
        self._order = itertools.count()
        self._refilled = clock()

    def __len__(self) -> int:
        return len(self._queued)

    def waiting(self, lane: Lane) -> int:
        return self._waiting[lane]

    def lane_of(self, key: K) -> Lane | None:
        queued = self._queued.get(key)
        return None if queued is None else queued[0]

    def touch(self, key: K, lane: Lane) -> None:
        """``key`` is to be written; a key already waiting keeps its place, unless it moves up
        from the runs lane to the spec lane."""
        queued = self._queued.get(key)
        if queued is not None and (queued[0] is Lane.SPEC or lane is Lane.RUNS):
            return
        if queued is not None:
            self._waiting[queued[0]] -= 1
        self._waiting[lane] += 1
        order = next(self._order)
        self._queued[key] = (lane, order)
        heapq.heappush(self._heaps[lane], (self._last.get(key, float("-inf")), order, key))

    def forget(self, key: K) -> None:
        if (queued := self._queued.pop(key, None)) is not None:
            self._waiting[queued[0]] -= 1
        self._last.pop(key, None)

    def take(self, may_write: Callable[[], bool], *, busy: bool = False) -> list[K]:
        """The keys to write now, each counted as written now; none while ``may_write`` says
        no; both lanes from the runs lane's budget while ``busy``."""
        now = self._clock()
        elapsed, self._refilled = now - self._refilled, now
        for bucket in self._buckets.values():
            bucket.refill(elapsed)
        chosen: list[K] = []
        for lane, heap in self._heaps.items():
            bucket = self._buckets[Lane.RUNS if busy else lane]
            while heap and bucket.tokens >= 1 and may_write():
                last, order, key = heap[0]
                if self._queued.get(key) != (lane, order):
                    heapq.heappop(heap)  # moved to the spec lane, or forgotten
                    continue
                if now - last < self._min_interval:
                    break
                heapq.heappop(heap)
                del self._queued[key]
                self._waiting[lane] -= 1
                self._last[key] = now
                bucket.tokens -= 1
                chosen.append(key)
        return chosen

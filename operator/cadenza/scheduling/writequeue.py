"""Which Tasks' statuses may be written now: two lanes, each with its own rate.

A status that answers a Task created or edited (its ``observedGeneration`` behind the Task's
generation) waits in the *spec* lane; one that only follows firing (next run, counters, the last
run) waits in the *runs* lane. Each lane has its own token bucket, so:

- the writes firing causes stay under the runs lane's rate whatever the fire rate, and
- a Task just applied gets its first status about as fast as Tasks are applied (up to the spec
  lane's rate), instead of queueing behind every firing Task's refresh. Those writes answer the
  users' own writes one for one (coalesced per Task), so they cannot outgrow them.

Within a lane the least recently written Task comes first (one never written before any other),
and no Task is handed out twice within ``min_interval``. Pure: the caller brings the clock and
says whether writing is allowed at all (the lease).
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
import itertools
import time
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
        # Spec first: a lane's order is the order it is served in.
        self._buckets = {
            Lane.SPEC: _Bucket(spec_per_second, spec_per_second),
            Lane.RUNS: _Bucket(runs_per_second, runs_per_second),
        }
        self._heaps: dict[Lane, list[tuple[float, int, K]]] = {lane: [] for lane in Lane}
        """Per lane, by last write: a take looks only at what it may hand out now."""
        self._queued: dict[K, tuple[Lane, int]] = {}
        """Where each waiting key's live heap item is; an item not named here is stale."""
        self._last: dict[K, float] = {}
        self._order = itertools.count()
        self._refilled = clock()

    def __len__(self) -> int:
        return len(self._queued)

    def lane_of(self, key: K) -> Lane | None:
        queued = self._queued.get(key)
        return None if queued is None else queued[0]

    def touch(self, key: K, lane: Lane) -> None:
        """``key`` is to be written; a key already waiting keeps its place, unless it moves up
        from the runs lane to the spec lane."""
        queued = self._queued.get(key)
        if queued is not None and (queued[0] is Lane.SPEC or lane is Lane.RUNS):
            return
        order = next(self._order)
        self._queued[key] = (lane, order)
        heapq.heappush(self._heaps[lane], (self._last.get(key, float("-inf")), order, key))

    def forget(self, key: K) -> None:
        self._queued.pop(key, None)
        self._last.pop(key, None)

    def take(self, may_write: Callable[[], bool]) -> list[K]:
        """The keys to write now, each counted as written now; none while ``may_write`` says
        no."""
        now = self._clock()
        elapsed, self._refilled = now - self._refilled, now
        chosen: list[K] = []
        for lane, bucket in self._buckets.items():
            bucket.refill(elapsed)
            heap = self._heaps[lane]
            while heap and bucket.tokens >= 1 and may_write():
                last, order, key = heap[0]
                if self._queued.get(key) != (lane, order):
                    heapq.heappop(heap)  # moved to the spec lane, or forgotten
                    continue
                if now - last < self._min_interval:
                    break
                heapq.heappop(heap)
                del self._queued[key]
                self._last[key] = now
                bucket.tokens -= 1
                chosen.append(key)
        return chosen

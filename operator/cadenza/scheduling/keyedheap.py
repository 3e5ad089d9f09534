"""A min-heap with at most one live entry per key: what the leader's fire times, run timers and
status queue are kept in.

Setting a key again replaces its entry and discarding a key drops it, both in O(log n) by lazy
deletion: the entry replaced stays in the list and is skipped when it comes up.

Invariants:
- Each key has at most one live entry; stale entries are never returned.
- Stale entries never outnumber the live ones by more than ``SLACK``: past that the heap is
  rebuilt from the live ones (amortized O(1) per operation). So memory follows what is live: a
  run's deadline timer, dropped when the run ends minutes before it would fire, does not stay for
  those minutes (it did, and at 1,000 runs a second with the default 300 s timeout that was some
  300,000 entries).
- Entries of equal priority come out in the order they were set, so keys need no order.
- Not thread-safe: one owner (the event loop) touches it.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterator
from typing import Any, Generic, Protocol, TypeVar


class _Comparable(Protocol):
    def __lt__(self, other: Any, /) -> bool: ...


K = TypeVar("K", bound=Hashable)
P = TypeVar("P", bound=_Comparable)

SLACK = 64
"""Stale entries tolerated beyond as many as there are live ones before a rebuild."""


class KeyedHeap(Generic[K, P]):
    def __init__(self) -> None:
        self._live: dict[K, tuple[P, int]] = {}
        """Each key's priority and the number of its live entry."""
        self._heap: list[tuple[P, int, K]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        """Keys with a live entry."""
        return len(self._live)

    def __contains__(self, key: object) -> bool:
        return key in self._live

    def items(self) -> Iterator[tuple[K, P]]:
        """Each key with a live entry and its priority, in no particular order."""
        return ((key, priority) for key, (priority, _) in self._live.items())

    @property
    def entries(self) -> int:
        """Entries in the heap, stale ones included."""
        return len(self._heap)

    def __getitem__(self, key: K) -> P:
        """The key's priority; KeyError when it has no entry."""
        return self._live[key][0]

    def get(self, key: K) -> P | None:
        """The key's priority, None when it has no entry."""
        found = self._live.get(key)
        return None if found is None else found[0]

    def set(self, key: K, priority: P) -> None:
        """Gives ``key`` this priority, replacing the one it had."""
        order = next(self._order)
        self._live[key] = (priority, order)
        heapq.heappush(self._heap, (priority, order, key))
        self._compact()

    def discard(self, key: K) -> None:
        if self._live.pop(key, None) is not None:
            self._compact()

    def peek(self) -> tuple[K, P] | None:
        """The key of lowest priority, with it; None when empty."""
        self._drop_stale_top()
        if not self._heap:
            return None
        priority, _, key = self._heap[0]
        return key, priority

    def pop(self) -> tuple[K, P] | None:
        """The key of lowest priority, with it, taken off; None when empty."""
        self._drop_stale_top()
        if not self._heap:
            return None
        priority, _, key = heapq.heappop(self._heap)
        del self._live[key]
        return key, priority

    def _drop_stale_top(self) -> None:
        heap, live = self._heap, self._live
        while heap and live.get(heap[0][2], (None, -1))[1] != heap[0][1]:
            heapq.heappop(heap)

    def _compact(self) -> None:
        if len(self._heap) > 2 * len(self._live) + SLACK:
            self._heap = [(p, order, key) for key, (p, order) in self._live.items()]
            heapq.heapify(self._heap)

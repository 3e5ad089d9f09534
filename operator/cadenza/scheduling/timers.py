"""A heap of the moments the leader must look at a run again: its deadline, the end of a
retry's backoff, the next question to the pod of a run taken over, a send to try again.

Invariants:
- One timer per (run, kind): setting it again replaces the earlier one, clearing a run drops
  all of its timers, each in O(log n); what was replaced or dropped does not stay in memory
  until its moment (:class:`~cadenza.scheduling.keyedheap.KeyedHeap`).
- Pure: time is given by the caller.
"""

from __future__ import annotations

import enum
from datetime import datetime

from cadenza.core.ids import ExecutionId
from cadenza.scheduling.keyedheap import KeyedHeap


class Kind(enum.Enum):
    OVERDUE = "overdue"
    """The run's deadline plus a grace has passed with no result."""
    RETRY = "retry"
    """A retry's backoff is over: send the next attempt."""
    CHECK = "check"
    """Ask the pod of a run taken over from an earlier leader how it went."""
    RESEND = "resend"
    """A claimed run that was not sent (lease in doubt, an error): try again."""
    WITHDRAW = "withdraw"
    """A run its pod holds for a tick still to come, of a Task that went: cancel it there."""


class Timers:
    def __init__(self) -> None:
        self._heap: KeyedHeap[tuple[ExecutionId, Kind], datetime] = KeyedHeap()

    def set(self, run: ExecutionId, kind: Kind, when: datetime) -> None:
        self._heap.set((run, kind), when)

    def cancel(self, run: ExecutionId, kind: Kind) -> None:
        self._heap.discard((run, kind))

    def clear(self, run: ExecutionId) -> None:
        for kind in Kind:
            self._heap.discard((run, kind))

    def due(self, now: datetime) -> list[tuple[ExecutionId, Kind]]:
        """The timers that have come, earliest first; each is removed."""
        out: list[tuple[ExecutionId, Kind]] = []
        while (first := self._heap.peek()) is not None and first[1] <= now:
            self._heap.pop()
            out.append(first[0])
        return out

    def next_at(self) -> datetime | None:
        first = self._heap.peek()
        return None if first is None else first[1]

    @property
    def entries(self) -> int:
        """Heap entries, stale ones included."""
        return self._heap.entries

    def __len__(self) -> int:
        return len(self._heap)

"""A heap of the moments the leader must look at a run again: its deadline, the end of a
retry's backoff, the next question to the pod of a run taken over, a send to try again.

Invariants:
- One timer per (run, kind): setting it again replaces the earlier one, clearing a run drops
  all of its timers. Replaced entries stay in the heap and are skipped when they come up, so
  every operation costs O(log n).
- Pure: time is given by the caller.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from datetime import datetime

from cadenza.core.ids import ExecutionId


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
        self._heap: list[tuple[datetime, int, ExecutionId, Kind]] = []
        self._at: dict[tuple[ExecutionId, Kind], datetime] = {}
        self._order = itertools.count()

    def set(self, run: ExecutionId, kind: Kind, when: datetime) -> None:
        self._at[(run, kind)] = when
        heapq.heappush(self._heap, (when, next(self._order), run, kind))

    def cancel(self, run: ExecutionId, kind: Kind) -> None:
        self._at.pop((run, kind), None)

    def clear(self, run: ExecutionId) -> None:
        for kind in Kind:
            self._at.pop((run, kind), None)

    def due(self, now: datetime) -> list[tuple[ExecutionId, Kind]]:
        """The timers that have come, earliest first; each is removed."""
        out: list[tuple[ExecutionId, Kind]] = []
        while self._heap and self._heap[0][0] <= now:
            when, _, run, kind = heapq.heappop(self._heap)
            if self._at.get((run, kind)) == when:
                del self._at[(run, kind)]
                out.append((run, kind))
        return out

    def next_at(self) -> datetime | None:
        while self._heap and self._at.get((self._heap[0][2], self._heap[0][3])) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._at)

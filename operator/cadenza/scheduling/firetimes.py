"""The next fire time of each scheduled Task, in the order they are to be claimed: the
scheduler's heap. Each fire time is claimed its Task's *lead* before it is due.

Invariants:
- At most one fire time per Task counts: setting a new one (an edited schedule, or the same tick
  with another lead) or discarding it (a deleted or suspended Task) leaves the old heap entry
  behind as stale, and stale entries are never returned.
- Stale entries do not pile up: once they outnumber the live ones (plus a small slack), the heap
  is rebuilt from the live ones. So memory follows the Tasks that exist, not every Task that ever
  did; a deleted Task's yearly tick does not wait a year in the heap.
- Only the event loop touches it: no locks.
"""

from __future__ import annotations

import heapq
from datetime import datetime, timedelta

from cadenza.core.ids import TaskUid

SLACK = 64
"""Stale entries tolerated beyond as many as there are live ones before a rebuild."""


NO_LEAD = timedelta(0)


class FireTimes:
    def __init__(self) -> None:
        self._next: dict[TaskUid, tuple[datetime, datetime]] = {}
        """Each Task's (moment to claim, tick)."""
        self._heap: list[tuple[datetime, datetime, TaskUid]] = []

    def __len__(self) -> int:
        """Tasks with a fire time."""
        return len(self._next)

    @property
    def entries(self) -> int:
        """Heap entries, stale ones included."""
        return len(self._heap)

    def get(self, task: TaskUid) -> datetime | None:
        """The Task's next tick."""
        found = self._next.get(task)
        return found[1] if found else None

    def set(self, task: TaskUid, tick: datetime, lead: timedelta = NO_LEAD) -> None:
        """The Task's next ``tick``, to be claimed ``lead`` before it."""
        claim_at = tick - lead
        self._next[task] = (claim_at, tick)
        heapq.heappush(self._heap, (claim_at, tick, task))
        self._compact()

    def discard(self, task: TaskUid) -> None:
        if self._next.pop(task, None) is not None:
            self._compact()

    def earliest(self) -> datetime | None:
        """The earliest moment a Task's tick is to be claimed (None: no Task has one)."""
        self._drop_stale_top()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, horizon: datetime) -> tuple[datetime, TaskUid] | None:
        """The earliest tick to be claimed at or before ``horizon``, with its Task, taken off
        (the caller sets the Task's next one); None when none is due."""
        self._drop_stale_top()
        if not self._heap or self._heap[0][0] > horizon:
            return None
        _, tick, task = heapq.heappop(self._heap)
        del self._next[task]
        return tick, task

    def _drop_stale_top(self) -> None:
        while self._heap and self._next.get(self._heap[0][2]) != self._heap[0][:2]:
            heapq.heappop(self._heap)

    def _compact(self) -> None:
        if len(self._heap) > 2 * len(self._next) + SLACK:
            self._heap = [(claim_at, tick, task) for task, (claim_at, tick) in self._next.items()]
            heapq.heapify(self._heap)

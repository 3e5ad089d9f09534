"""The next fire time of each scheduled Task, earliest first: the scheduler's heap.

Invariants:
- At most one fire time per Task counts: setting a new one (an edited schedule) or discarding it
  (a deleted or suspended Task) leaves the old heap entry behind as stale, and stale entries are
  never returned.
- Stale entries do not pile up: once they outnumber the live ones (plus a small slack), the heap
  is rebuilt from the live ones. So memory follows the Tasks that exist, not every Task that ever
  did; a deleted Task's yearly tick does not wait a year in the heap.
- Only the event loop touches it: no locks.
"""

from __future__ import annotations

import heapq
from datetime import datetime

from cadenza.core.ids import TaskUid

SLACK = 64
"""Stale entries tolerated beyond as many as there are live ones before a rebuild."""


class FireTimes:
    def __init__(self) -> None:
        self._next: dict[TaskUid, datetime] = {}
        self._heap: list[tuple[datetime, TaskUid]] = []

    def __len__(self) -> int:
        """Tasks with a fire time."""
        return len(self._next)

    @property
    def entries(self) -> int:
        """Heap entries, stale ones included."""
        return len(self._heap)

    def get(self, task: TaskUid) -> datetime | None:
        return self._next.get(task)

    def set(self, task: TaskUid, tick: datetime) -> None:
        self._next[task] = tick
        heapq.heappush(self._heap, (tick, task))
        self._compact()

    def discard(self, task: TaskUid) -> None:
        if self._next.pop(task, None) is not None:
            self._compact()

    def earliest(self) -> datetime | None:
        """The earliest fire time of any Task (None: no Task has one)."""
        self._drop_stale_top()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, horizon: datetime) -> tuple[datetime, TaskUid] | None:
        """The earliest fire time at or before ``horizon`` with its Task, taken off (the caller
        sets the Task's next one); None when none is due."""
        self._drop_stale_top()
        if not self._heap or self._heap[0][0] > horizon:
            return None
        tick, task = heapq.heappop(self._heap)
        del self._next[task]
        return tick, task

    def _drop_stale_top(self) -> None:
        while self._heap and self._next.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)

    def _compact(self) -> None:
        if len(self._heap) > 2 * len(self._next) + SLACK:
            self._heap = [(tick, task) for task, tick in self._next.items()]
            heapq.heapify(self._heap)

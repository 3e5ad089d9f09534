"""Which open runs changed outside the leader's own hands, so it re-reads only those.

Two sources: callbacks that reached this replica (it is told the run at once), and the store's
change log, where every replica's callbacks leave a row, read with a gap-aware cursor
(:class:`cadenza.core.changes.ChangeCursor`) so a late commit is not skipped.

Invariants:
- A run named here and busy at the moment (a dispatch or a question to its pod under way) is kept
  and named again on a later read, never dropped.
- The log is read when a callback here named a run, when the last read was full, and otherwise
  once per ``poll_seconds``: the leader's loop wakes for every claim, timer and finished run,
  and a read per wake cost it more than the reads themselves found.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cadenza.core.changes import ChangeCursor
from cadenza.core.ids import ExecutionId
from cadenza.store.port import RunStore

PER_READ = 5000


class ChangeFeed:
    def __init__(self, store: RunStore, poll_seconds: float) -> None:
        self._store = store
        self._poll_seconds = poll_seconds
        self._cursor = ChangeCursor(high=0)
        self._marked: set[ExecutionId] = set()
        self._next_poll = 0.0
        self.behind = False
        """The last read was full: there is more to read at once."""

    async def start(self) -> None:
        """Read from the newest change on (call before reading the open runs, so a change made
        in between is read again rather than missed)."""
        self._cursor = ChangeCursor(high=await self._store.last_change())

    def mark(self, run: ExecutionId) -> None:
        self._marked.add(run)

    def due(self) -> bool:
        """Whether there may be something to read now."""
        return bool(self._marked) or self.behind or time.monotonic() >= self._next_poll

    def seconds_to_poll(self) -> float:
        """Until the log is due for its periodic read."""
        return max(self._next_poll - time.monotonic(), 0.0)

    async def read(self, ready: Callable[[ExecutionId], bool]) -> list[ExecutionId]:
        """The runs changed since the last read that are ``ready`` to be looked at; the others
        are kept for a later read. Nothing when the log is not :meth:`due` for a read."""
        if not self.due():
            return []
        after, gaps = self._cursor.wanted()
        self._next_poll = time.monotonic() + self._poll_seconds
        found = await self._store.changes_since(after, gaps, PER_READ)
        fresh = set(self._cursor.saw([seq for seq, _ in found], time.monotonic()))
        self.behind = len(found) == PER_READ
        wanted = self._marked | {run for seq, run in found if seq in fresh}
        now = [run for run in wanted if ready(run)]
        self._marked = wanted.difference(now)
        return now

"""Task status: the summary a person reads, written back coalesced and rate-limited.

The leader marks a Task dirty whenever something about it changes (a tick, a run's progress, a
condition); a flusher writes dirty Tasks at most once per ``min_interval`` each, computing the run
summary from MySQL at write time. A write that answers a Task created or edited is budgeted at
``max_spec_per_second``, apart from those that follow firing, at ``max_per_second``
(``writequeue``). So the number of API writes per Task is bounded by ``1 / min_interval``
whatever the fire frequency, firing never costs more than ``max_per_second`` writes overall, a
burst of changes costs one write, and a Task applied among thousands that fire gets its status
within seconds.

Invariants:
- This book is the only writer of ``Task.status`` (conditions included), so a merge patch of the
  whole status never loses another writer's fields. What the document says and which Events
  it brings is ``statusdoc``'s; the book decides when to write and does the writing.
- Nothing is written while the lease is in doubt.
- An entry lives while its Task does: the scheduler says when a Task went (``gone``), a write
  that finds no Task (404) drops it as well, and its ``task`` series (status writes, consecutive
  failures) go with it. A stopping book (the replica steps down) removes all its series.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.engine import Engine

from cadenza.core.ids import TaskUid
from cadenza.kube import conditions as task_conditions
from cadenza.kube import events, objects
from cadenza.kube.conditions import Condition
from cadenza.kube.views import StatusSeed
from cadenza.logthrottle import Throttled
from cadenza.metrics import Metrics
from cadenza.scheduling.plans import TaskPlan
from cadenza.scheduling.statusdoc import StatusEntry, digest
from cadenza.scheduling.writequeue import Lane, WriteQueue
from cadenza.store import summary

log = logging.getLogger(__name__)

FLUSH_TICK_SECONDS = 0.2
WRITERS = 8
"""Status writes in flight at once (threads of the shared pool they may hold)."""


class TaskStatusBook:
    def __init__(
        self,
        client: objects.ApiClient,
        engine: Engine,
        metrics: Metrics,
        *,
        min_interval: float = 2.0,
        max_per_second: float = 20.0,
        max_spec_per_second: float = 200.0,
        clock: Callable[[], float] = time.monotonic,
        seeds: Callable[[str, str], StatusSeed | None] = lambda namespace, name: None,
    ) -> None:
        """``seeds`` gives a Task's stored status as last watched (None: not known, and the
        first write of this book reads the object instead)."""
        self._objects = objects.Objects(client)
        self._events = events.EventPoster(client)
        self._engine = engine
        self._metrics = metrics
        self._seeds = seeds
        self._entries: dict[TaskUid, StatusEntry] = {}
        self._due = WriteQueue[TaskUid](
            min_interval=min_interval,
            runs_per_second=max_per_second,
            spec_per_second=max_spec_per_second,
            clock=clock,
        )
        """The Tasks to write: the flusher looks at the ones it may write now, never at every
        Task."""
        self._writers = asyncio.Semaphore(WRITERS)
        self._failures = Throttled(log, "status writes", clock=clock)
        """While the API server is away every write fails: one warning per 30 s, not each."""

    # -- what the engine tells ----------------------------------------------------------------

    def _entry(self, uid: TaskUid, namespace: str, name: str, generation: int) -> StatusEntry:
        entry = self._entries.get(uid)
        if entry is None:
            entry = self._entries[uid] = StatusEntry(uid, namespace, name, generation)
            if (seed := self._seeds(namespace, name)) is not None:
                entry.answered = seed.observed_generation
            self._touch(entry)
        entry.generation = max(entry.generation, generation)
        return entry

    def schedule(self, plan: TaskPlan, next_fire: datetime | None) -> None:
        entry = self._entry(plan.uid, plan.namespace, plan.name, plan.generation)
        entry.next_fire = next_fire
        entry.scheduled = task_conditions.scheduled(
            plan.generation, plan.problems, plan.suspend, next_fire
        )
        entry.fault = (
            task_conditions.ready(plan.generation, plan.problems) if plan.problems else None
        )
        self._touch(entry)

    def conditions(
        self, uid: TaskUid, namespace: str, name: str, generation: int, conditions: list[Condition]
    ) -> None:
        entry = self._entry(uid, namespace, name, generation)
        wanted = {c.type: c for c in conditions}
        if wanted != entry.conditions:
            entry.conditions = wanted
            self._touch(entry)

    def run_changed(self, uid: TaskUid) -> None:
        entry = self._entries.get(uid)
        if entry is not None:
            self._touch(entry)

    def misfired(self, plan: TaskPlan, fired: int, dropped: int) -> None:
        entry = self._entry(plan.uid, plan.namespace, plan.name, plan.generation)
        entry.pending_events.append(
            (
                "Warning",
                "Misfired",
                f"{fired + dropped} ticks were missed while no leader ran; "
                f"fired {fired}, dropped {dropped} ({plan.misfire.value})",
            )
        )
        self._touch(entry)

    def gone(self, plan: TaskPlan) -> None:
        self.forget(plan.uid)

    def forget(self, uid: TaskUid) -> None:
        """The Task went: drop its entry and its series (a write in flight counts no more)."""
        if (entry := self._entries.pop(uid, None)) is not None:
            self._due.forget(uid)
            self._drop_series(entry)

    def _drop_series(self, entry: StatusEntry) -> None:
        self._metrics.tasks.remove(entry.series)

    def _touch(self, entry: StatusEntry) -> None:
        lane = Lane.SPEC if entry.answered < entry.generation else Lane.RUNS
        if self._entries.get(entry.uid) is entry:  # not after a failed write whose Task went
            self._due.touch(entry.uid, lane)

    # -- the flusher --------------------------------------------------------------------------

    async def run(
        self, lease_valid: Callable[[], bool], crowded: Callable[[], bool] = lambda: False
    ) -> None:
        """Write due statuses while ``lease_valid``; those of Tasks applied no faster than the
        others while ``crowded`` (a crowded tick is being handed over)."""
        tracked = self._metrics.tasks_tracked.labels(part="status")
        try:
            await self._flush_forever(lease_valid, crowded, tracked.set)
        finally:
            # A follower cannot tell which Tasks go: their series may not outlive the lead.
            for entry in self._entries.values():
                self._drop_series(entry)
            tracked.set(0)
            for lane in Lane:
                self._metrics.status_waiting.labels(lane=lane.value).set(0)

    async def _flush_forever(
        self,
        lease_valid: Callable[[], bool],
        crowded: Callable[[], bool],
        tracked: Callable[[float], None],
    ) -> None:
        while True:
            await asyncio.sleep(FLUSH_TICK_SECONDS)
            tracked(len(self._entries))
            for lane in Lane:
                self._metrics.status_waiting.labels(lane=lane.value).set(self._due.waiting(lane))
            # A Task that went was forgotten by the queue as well.
            chosen = self._due.take(lease_valid, busy=crowded())
            await self._write_all([self._entries[uid] for uid in chosen])

    async def _write_all(self, entries: list[StatusEntry]) -> None:
        """One read of the history for all ``entries``, then their writes side by side (each
        waits on the API server, not on us)."""
        if not entries:
            return
        try:
            facts = await asyncio.to_thread(
                summary.read_many, self._engine, [e.uid for e in entries]
            )
        except Exception as exc:  # the database is unreachable: they stay due
            for entry in entries:
                self._touch(entry)
            self._failures.failed("status of %d task(s) not written: %r", len(entries), exc)
            return
        await asyncio.gather(*(self._write(entry, facts[entry.uid]) for entry in entries))

    async def _write(self, entry: StatusEntry, facts: summary.Summary) -> None:
        async with self._writers:
            # Read on the event loop, which owns the indexes the seeds come from.
            seed = None if entry.seeded else self._seeds(entry.namespace, entry.name)
            try:
                patched = await asyncio.to_thread(self._flush, entry, facts, seed)
            except Exception as exc:  # refused or unreachable: the Task stays due, unless gone
                if isinstance(exc, objects.ApiError) and exc.status == 404:
                    if self._entries.get(entry.uid) is entry:
                        self.forget(entry.uid)
                    return
                self._touch(entry)
                why = exc.reason if isinstance(exc, objects.ApiError) else repr(exc)
                self._failures.failed(
                    "status of task %s/%s not written: %s", entry.namespace, entry.name, why
                )
                return
            # Counted on the event loop, and only for a Task still kept: a Task that went while
            # its write was in flight must not leave its series behind.
            if patched and self._entries.get(entry.uid) is entry:
                self._metrics.tasks.written(entry.series, entry.reported_failures)

    def _flush(self, entry: StatusEntry, facts: summary.Summary, seed: StatusSeed | None) -> bool:
        """Write the entry's status if it changed (True when it did) and post its events."""
        if not entry.seeded:
            if seed is None:
                seed = StatusSeed.of(self._objects.status_of("tasks", entry.namespace, entry.name))
            entry.seed(seed)
        status = entry.document(facts)
        written = digest(status)
        patched = written != entry.written
        if patched:
            self._objects.patch_status("tasks", entry.namespace, entry.name, status)
            entry.written = written
        entry.answered = max(entry.answered, status["observedGeneration"])
        for kind, reason, message in entry.take_events(facts):
            self._events.post(entry.namespace, entry.name, entry.uid, kind, reason, message)
        return patched

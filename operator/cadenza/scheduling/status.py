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
  whole status never loses another writer's fields. ``lastTransitionTime`` changes only when a
  condition's status does; the first write of a new leader seeds it from the object.
- Events are posted for what a person must notice — failures, recoveries, skipped ticks,
  misfires, a condition turning bad — never for every success, and at most once per flush.
- Nothing is written while the lease is in doubt.
- An entry lives while its Task does: the scheduler says when a Task went (``gone``), a write
  that finds no Task (404) drops it as well, and its ``task`` series (status writes, consecutive
  failures) go with it. A stopping book (the replica steps down) removes all its series.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine

from cadenza.core.ids import TaskUid
from cadenza.kube import conditions as task_conditions
from cadenza.kube import events, objects
from cadenza.kube.conditions import Condition
from cadenza.kube.views import StatusSeed
from cadenza.logthrottle import Throttled
from cadenza.metrics import Metrics
from cadenza.scheduling.plans import TaskPlan
from cadenza.scheduling.writequeue import Lane, WriteQueue
from cadenza.store import summary

log = logging.getLogger(__name__)

FLUSH_TICK_SECONDS = 0.2
WRITERS = 8
"""Status writes in flight at once (threads of the shared pool they may hold)."""
PHASES = {
    "claimed": "Claimed",
    "queued": "Queued",
    "dispatched": "Dispatched",
    "running": "Running",
    "succeeded": "Succeeded",
    "failed": "Failed",
    "timed_out": "TimedOut",
    "cancelled": "Cancelled",
    "skipped": "Skipped",
    "lost": "Lost",
}


def rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(slots=True)
class _Entry:
    uid: TaskUid
    namespace: str
    name: str
    generation: int = 0
    next_fire: datetime | None = None
    scheduled: Condition | None = None
    fault: Condition | None = None
    """``Ready=False`` for what the engine found wrong with the Task's plan; it stands in for the
    mirror's ``Ready`` (which sees only the spec) until the plan changes."""
    conditions: dict[str, Condition] = dataclasses.field(default_factory=dict)
    answered: int = 0
    """The generation the stored status answers (its ``observedGeneration``): behind
    ``generation``, the next write answers an edit and goes in the spec lane."""
    written: bytes | None = None
    """A digest of the status last written: all a write needs to know whether the next one
    changes anything, where the status itself would be kept for every Task."""
    transitions: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    seeded: bool = False
    reported_failures: int = 0
    reported_skipped: int = 0
    pending_events: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)


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
        self._entries: dict[TaskUid, _Entry] = {}
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

    def _entry(self, uid: TaskUid, namespace: str, name: str, generation: int) -> _Entry:
        entry = self._entries.get(uid)
        if entry is None:
            entry = self._entries[uid] = _Entry(uid, namespace, name, generation)
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

    def _drop_series(self, entry: _Entry) -> None:
        for series in (self._metrics.status_writes, self._metrics.consecutive_failures):
            series.remove(_series(entry))

    def _touch(self, entry: _Entry) -> None:
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

    async def _write_all(self, entries: list[_Entry]) -> None:
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

    async def _write(self, entry: _Entry, facts: summary.Summary) -> None:
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
                self._metrics.status_writes.labels(task=_series(entry)).inc()
                failures = self._metrics.consecutive_failures.labels(task=_series(entry))
                failures.set(entry.reported_failures)

    def _flush(self, entry: _Entry, facts: summary.Summary, seed: StatusSeed | None) -> bool:
        """Write the entry's status if it changed (True when it did) and post its events."""
        if not entry.seeded:
            self._seed(entry, seed)
        status = self._status(entry, facts)
        digest = _digest(status)
        patched = digest != entry.written
        if patched:
            self._objects.patch_status("tasks", entry.namespace, entry.name, status)
            entry.written = digest
        entry.answered = max(entry.answered, status["observedGeneration"])
        self._post_events(entry, facts)
        return patched

    def _seed(self, entry: _Entry, seed: StatusSeed | None) -> None:
        if seed is None:
            seed = StatusSeed.of(self._objects.status_of("tasks", entry.namespace, entry.name))
        for kind, status, since in seed.transitions:
            entry.transitions[kind] = (status, since)
        entry.reported_failures = seed.failures
        entry.reported_skipped = seed.skipped
        entry.seeded = True

    def _status(self, entry: _Entry, facts: summary.Summary) -> dict[str, Any]:
        last = facts.last
        status: dict[str, Any] = {
            "observedGeneration": entry.generation,
            "nextScheduleTime": rfc3339(entry.next_fire),
            "lastScheduleTime": rfc3339(facts.last_schedule_at),
            "lastSuccessfulTime": rfc3339(facts.last_success_at),
            "lastExecution": _execution(last) if last else None,
            "active": [
                {
                    "id": str(r.id),
                    "pod": r.pod_name or "",
                    "tick": rfc3339(r.scheduled_at),
                    "attempt": r.attempt,
                    "startedAt": rfc3339(r.dispatched_at),
                }
                for r in facts.open
                if r.status.value != "queued"
            ],
            "queued": sum(1 for r in facts.open if r.status.value == "queued"),
            "counters": facts.counters,
            "consecutiveFailures": facts.consecutive_failures,
            "conditions": self._conditions(entry),
        }
        # A merge patch keeps what it leaves out: a field that no longer applies (the next run
        # of a Task just suspended) is sent as null, which removes it.
        return status

    def _conditions(self, entry: _Entry) -> list[dict[str, Any]]:
        wanted = dict(entry.conditions)
        # Only in place of the mirror's Ready: the conditions it derives arrive together.
        if entry.fault is not None and "Ready" in wanted:
            wanted["Ready"] = entry.fault
        if entry.scheduled is not None:
            wanted["Scheduled"] = entry.scheduled
        out = []
        for c in sorted(wanted.values(), key=lambda c: c.type):
            previous = entry.transitions.get(c.type)
            if previous is None or previous[0] != c.status:
                previous = (c.status, rfc3339(datetime.now(UTC)) or "")
                entry.transitions[c.type] = previous
                # Scheduled=False only echoes Ready or spec.suspend: no event of its own.
                if c.status == "False" and c.type != "Scheduled":
                    entry.pending_events.append(("Warning", c.reason, c.message))
            out.append(
                {
                    "type": c.type,
                    "status": c.status,
                    "reason": c.reason,
                    "message": c.message,
                    "observedGeneration": c.observed_generation,
                    "lastTransitionTime": previous[1],
                }
            )
        return out

    def _post_events(self, entry: _Entry, facts: summary.Summary) -> None:
        failures, was = facts.consecutive_failures, entry.reported_failures
        if failures > was and facts.last is not None:
            entry.pending_events.append(
                (
                    "Warning",
                    "RunFailed",
                    f"run {facts.last.id} {PHASES[facts.last.status.value].lower()}: "
                    f"{facts.last.error or 'no message'} ({failures} in a row)",
                )
            )
        elif failures == 0 and was > 0:
            entry.pending_events.append(
                ("Normal", "Recovered", f"a run succeeded after {was} failed in a row")
            )
        skipped, skipped_was = facts.counters["skipped"], entry.reported_skipped
        if skipped > skipped_was:
            entry.pending_events.append(
                (
                    "Normal",
                    "Skipped",
                    f"{skipped - skipped_was} tick(s) skipped: a run was still going",
                )
            )
        entry.reported_failures, entry.reported_skipped = failures, skipped
        for kind, reason, message in entry.pending_events:
            self._events.post(entry.namespace, entry.name, entry.uid, kind, reason, message)
        entry.pending_events.clear()


def _digest(status: dict[str, Any]) -> bytes:
    canonical = json.dumps(status, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(canonical.encode(), digest_size=16).digest()


def _series(entry: _Entry) -> str:
    """The entry's ``task`` label of the status writes counter."""
    return f"{entry.namespace}/{entry.name}"


def _execution(run: summary.RunBrief) -> dict[str, Any]:
    return {
        "id": str(run.id),
        "attempt": run.attempt,
        "phase": PHASES[run.status.value],
        "message": (run.error or "")[:1024],
        # null removes the previous run's tick or pod (a merge patch merges nested objects too)
        "tick": rfc3339(run.scheduled_at),
        "pod": run.pod_name or None,
    }

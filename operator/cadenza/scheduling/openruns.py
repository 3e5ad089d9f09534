"""The leader's table of open runs: what it knows of each run it has not seen end yet.

Indexed by Task as well, so the counts the scheduler asks on every tick (runs in flight, runs
queued) cost the Task's own runs, not every open run.

Invariants:
- A run is here from its claim (or its takeover from an earlier leader) until the leader learns
  that it ended; then it is removed once, by :meth:`OpenRuns.remove`.
- Only the event loop touches it: no locks.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from cadenza.core import modes
from cadenza.core.ids import ExecutionId, TaskUid
from cadenza.core.transitions import RunStatus
from cadenza.dispatch.credentials import DispatchToken
from cadenza.scheduling.plans import TaskPlan
from cadenza.store.executions import Execution
from cadenza.store.port import Fenced

SUSPENDED = "the Task was suspended before the run started"
"""Why a scheduled run not started when its Task was suspended ended cancelled."""

log = logging.getLogger(__name__)


@dataclasses.dataclass(slots=True)
class Run:
    """What the leader knows of one open run."""

    id: ExecutionId
    task: TaskUid
    attempt: int
    status: RunStatus
    scheduled_at: datetime | None
    requested_at: datetime
    origin: str
    pod: str | None = None
    pod_uid: str | None = None
    base_url: str | None = None
    token: DispatchToken | None = None
    deadline_at: datetime | None = None
    next_attempt_at: datetime | None = None
    used_pods: set[str] = dataclasses.field(default_factory=set)
    room_waits: int = 0
    """Times every pod answered busy to the current attempt (it waits for room meanwhile)."""
    send_at: datetime | None = None
    """Sent ahead of its tick: its first attempt is recorded at once and leaves then, so that
    the claim's and the record's transactions are off the path of the sends."""
    busy: bool = False
    """Something is being done to the run right now (a dispatch, a cancel, a question to its
    pod): nothing else may start on it."""
    taken_over: bool = False
    """Dispatched by an earlier leader: its callback may be addressed to a replica that is gone,
    so this leader asks the pod how it went."""

    @classmethod
    def taken_over_from(cls, execution: Execution) -> Run:
        """An open run an earlier leader left, as its row says."""
        run = cls(
            id=execution.id,
            task=execution.task_uid,
            attempt=execution.attempt,
            status=execution.status,
            scheduled_at=execution.scheduled_at,
            requested_at=execution.requested_at,
            origin=str(execution.origin),
            pod=execution.pod_name,
            deadline_at=execution.deadline_at,
            next_attempt_at=execution.next_attempt_at,
        )
        if execution.pod_name:
            run.used_pods.add(execution.pod_name)
        run.taken_over = run.status in (RunStatus.DISPATCHED, RunStatus.RUNNING)
        return run

    @property
    def tick(self) -> datetime | None:
        """A scheduled run's tick (None for other runs): it is not sent before."""
        return self.scheduled_at if self.origin == "schedule" else None

    def unwanted(self, plan: TaskPlan | None, attempt: int) -> bool:
        """Not to be started: its Task was deleted (``plan`` None), or suspended and ``attempt``
        is a scheduled tick's first (retries and manual runs go on)."""
        return plan is None or (plan.suspend and self.origin == "schedule" and attempt == 1)

    def due(self, attempt: int) -> datetime:
        """When ``attempt`` was due: a retry when its backoff ended, else the tick (or the
        moment the run was asked for)."""
        if attempt > 1 and self.next_attempt_at is not None:
            return self.next_attempt_at
        return self.scheduled_at or self.requested_at

    def held_for_tick(self, now: datetime) -> bool:
        """A pod holds it for its tick, still to come."""
        return bool(self.base_url and self.tick and self.tick > now)

    @property
    def waiting_in_queue(self) -> bool:
        """Queued behind the Task's other runs (not waiting for a retry's backoff)."""
        return self.status is RunStatus.QUEUED and self.next_attempt_at is None

    @property
    def holds_a_slot(self) -> bool:
        """Counts against the Task's mode: in flight, or on its way to a pod."""
        return self.status is not RunStatus.QUEUED or self.busy


class OpenRuns:
    def __init__(self) -> None:
        self._runs: dict[ExecutionId, Run] = {}
        self._by_task: dict[TaskUid, dict[ExecutionId, Run]] = {}

    def add(self, run: Run) -> None:
        self._runs[run.id] = run
        self._by_task.setdefault(run.task, {})[run.id] = run

    def get(self, run: ExecutionId) -> Run | None:
        return self._runs.get(run)

    def remove(self, run: ExecutionId) -> Run | None:
        found = self._runs.pop(run, None)
        if found is not None:
            mine = self._by_task[found.task]
            del mine[run]
            if not mine:
                del self._by_task[found.task]
        return found

    def __iter__(self) -> Iterator[Run]:
        return iter(list(self._runs.values()))

    def __len__(self) -> int:
        return len(self._runs)

    def of_task(self, task: TaskUid) -> list[Run]:
        """The Task's open runs, oldest first."""
        return sorted(self._by_task.get(task, {}).values(), key=lambda r: r.id)

    def in_flight(self, task: TaskUid) -> int:
        return sum(1 for r in self._by_task.get(task, {}).values() if r.status is not _QUEUED)

    def queued(self, task: TaskUid) -> int:
        return sum(1 for r in self._by_task.get(task, {}).values() if r.status is _QUEUED)

    def slots_taken(self, task: TaskUid) -> int:
        return sum(1 for r in self._by_task.get(task, {}).values() if r.holds_a_slot)

    def in_queue(self, task: TaskUid) -> list[Run]:
        return [r for r in self.of_task(task) if r.waiting_in_queue and not r.busy]

    def release(
        self, tasks: Iterable[TaskUid], plans: Mapping[TaskUid, TaskPlan]
    ) -> tuple[list[Run], list[Run]]:
        """(the queued runs of ``tasks`` that each Task's mode lets go now, as the core's rule
        decides; the queued runs of those of them that went, to be cancelled)."""
        start: list[Run] = []
        gone: list[Run] = []
        for task in tasks:
            queue = self.in_queue(task)
            plan = plans.get(task)
            if not queue or plan is None:
                gone.extend(queue)
                continue
            released = modes.next_from_queue(
                plan.mode,
                self.slots_taken(task),
                [modes.QueuedRun(r.id, r.scheduled_at or r.requested_at) for r in queue],
                plan.max_concurrent,
            )
            by_id = {r.id: r for r in queue}
            start.extend(by_id[item.execution_id] for item in released)
        return start, gone

    def totals(self) -> tuple[int, int]:
        """(runs in flight, runs queued) over every Task."""
        queued = sum(1 for r in self._runs.values() if r.status is _QUEUED)
        return len(self._runs) - queued, queued


_QUEUED = RunStatus.QUEUED


class Actions:
    """What is being done to runs, one action per run at a time (``Run.busy``), each in a task
    of its own whose failure is logged (a fenced write is no failure: the leader stepped down).

    At most ``limit`` actions are under way at once; the others wait their turn in the order
    they came, their runs busy meanwhile. So a leader offered more runs than its pods take
    keeps a queue of runs, not thousands of half-done dispatches (their coroutines, pod
    candidates and pending requests, which every collection of the garbage collector walks).

    Once stopped (the leader's work ends), nothing new starts: a claim still in flight at that
    moment would otherwise start a dispatch on a store that is closing."""

    def __init__(self, limit: int | None = None) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: collections.deque[tuple[Run, Coroutine[Any, Any, None]]] = (
            collections.deque()
        )
        self._limit = limit
        self._stopped = False

    @property
    def waiting(self) -> int:
        """Actions waiting for their turn."""
        return len(self._waiting)

    @property
    def under_way(self) -> int:
        """Actions started and not ended."""
        return len(self._tasks)

    def __call__(self, run: Run, action: Coroutine[Any, Any, None]) -> None:
        if self._stopped:
            action.close()
            return
        run.busy = True
        if self._limit is not None and len(self._tasks) >= self._limit:
            self._waiting.append((run, action))
        else:
            self._start(run, action)

    def _start(self, run: Run, action: Coroutine[Any, Any, None]) -> None:
        async def acting() -> None:
            try:
                await action
            finally:
                run.busy = False

        task = asyncio.create_task(acting())
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def cancel_all(self) -> None:
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        while self._waiting:
            run, action = self._waiting.popleft()
            action.close()
            run.busy = False

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._log_failure(task)
        if self._waiting and not self._stopped:
            self._start(*self._waiting.popleft())

    def _log_failure(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None or isinstance(exc, Fenced):
            return
        if self._stopped:  # the leader's store closed under it: expected, not a failure
            log.debug("run handling ended with the leader's work: %r", exc)
        else:
            log.error("run handling failed: %r", exc, exc_info=exc)

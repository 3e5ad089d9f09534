"""The life of a run on the leader: a coordinator that starts the parts acting on runs and
applies what they return. The parts never call one another: :mod:`dispatcher` sends an attempt,
:mod:`settling` settles runs nobody reported on, :mod:`changefeed` names the runs callbacks
changed, :mod:`openruns` and :mod:`timers` hold the open runs and when to look at them again.

The leader learns of a change from the part that made it, from the change feed (callbacks
applied by any replica), or from a run's deadline timer: it never re-reads its open runs.

Invariants:
- The per-run token's hash and the chosen pod are committed before the request leaves.
- A retry is a new attempt with a new execution key, preferring a pod no earlier attempt used.
- Queued runs are released by the core's rule (``modes.next_from_queue``).
- Past its deadline plus a grace a run is cancelled on its pod and counted lost (and retried if
  the policy allows): no run stays in flight forever.
- One action at most is under way per run (``Run.busy``), ``max_dispatches`` in all.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from cadenza.core import runs as rules
from cadenza.core.ids import Epoch, ExecutionId, TaskUid
from cadenza.core.transitions import TERMINAL, RunStatus
from cadenza.dispatch.client import DispatchClient
from cadenza.executors.pool import ExecutorPool
from cadenza.metrics import Metrics
from cadenza.scheduling.changefeed import ChangeFeed
from cadenza.scheduling.dispatcher import Dispatched, Dispatcher, Sent
from cadenza.scheduling.openruns import SUSPENDED, Actions, OpenRuns, Run
from cadenza.scheduling.plans import TaskPlan
from cadenza.scheduling.settling import Settled, Settler
from cadenza.scheduling.timers import Kind, Timers
from cadenza.store import executions
from cadenza.store.port import RunStore
from cadenza.waiting import woken

log = logging.getLogger(__name__)

CHANGES_SECONDS = 0.5
"""How often the change log is read for callbacks applied by other replicas."""
TAKEN_OVER_CHECK = timedelta(seconds=2)
"""How often a new leader asks a pod about a run an earlier leader dispatched there."""
RESEND_AFTER = timedelta(seconds=0.5)
"""How soon a run that could not be sent (lease in doubt, an error) is tried again."""

Notify = Callable[[TaskUid, executions.Execution | None], None]


class Lifecycle:
    def __init__(
        self,
        *,
        store: RunStore,
        epoch: Epoch,
        plans: Mapping[TaskUid, TaskPlan],
        pool: ExecutorPool,
        client: DispatchClient,
        callback_base_url: str,
        metrics: Metrics,
        on_change: Notify,
        lease_valid: Callable[[], bool],
        deadline_grace_seconds: float = 10.0,
        max_dispatches: int | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        rng = rng or random.Random()
        self._store = store
        self._plans = plans
        self._pool = pool
        self._metrics = metrics
        self._on_change = on_change
        self._lease_valid = lease_valid
        self._grace = timedelta(seconds=deadline_grace_seconds)
        self._now = clock
        self._dispatcher = Dispatcher(
            store=store,
            epoch=epoch,
            pool=pool,
            plans=plans,
            client=client,
            callback_base_url=callback_base_url,
            metrics=metrics,
            lease_valid=lease_valid,
            rng=rng,
            clock=clock,
        )
        self._settler = Settler(
            store=store, pool=pool, dispatcher=self._dispatcher, plans=plans, rng=rng, clock=clock
        )
        self._runs = OpenRuns()
        self._timers = Timers()
        self._changes = ChangeFeed(store, CHANGES_SECONDS)
        self._queues: set[TaskUid] = set()
        self._wake = asyncio.Event()
        self._act = Actions(max_dispatches)

    # -- what others ask ----------------------------------------------------------------------

    def in_flight(self, task: TaskUid) -> int:
        return self._runs.in_flight(task)

    def queued(self, task: TaskUid) -> int:
        return self._runs.queued(task)

    def task_gone(self, task: TaskUid) -> None:
        """Deleted: its balancer state goes; its runs not started yet are cancelled (pods too)."""
        self._dispatcher.forget(task)
        self.task_suspended(task)
        self._queue_changed(task)

    def task_suspended(self, task: TaskUid) -> None:
        """Suspended (or deleted): runs its pods hold for a tick to come are cancelled there."""
        for run in self._runs.of_task(task):
            self._withdraw_if_unwanted(run)

    def wake(self, run: ExecutionId | None = None) -> None:
        """A run changed elsewhere (a callback reached this replica): look at it now."""
        if run is not None:
            self._changes.mark(run)
        self._wake.set()

    # -- entry points -------------------------------------------------------------------------

    def claimed(
        self,
        run_id: ExecutionId,
        task: TaskUid,
        tick: datetime | None,
        origin: str,
        status: RunStatus,
        requested_at: datetime,
        send_at: datetime | None = None,
    ) -> None:
        """A run just claimed: start it now (to be sent at ``send_at``), or queue it."""
        run = Run(run_id, task, 1, status, tick, requested_at, origin, send_at=send_at)
        self._runs.add(run)
        if status is RunStatus.CLAIMED:
            self._start(run, 1)
        else:
            self._queue_changed(task)

    def sends_ahead(self, task: TaskUid) -> bool:
        """A run of the Task may be handed over before its tick: a pod of it holds runs."""
        return (plan := self._plans.get(task)) is not None and self._dispatcher.sends_ahead(plan)

    def skipped(self, task: TaskUid, run_id: ExecutionId) -> None:
        """The scheduler recorded a skipped tick (the Task's mode said so)."""
        self._metrics.outcomes.labels(status=RunStatus.SKIPPED.value).inc()
        self._on_change(task, None)

    def submit(self, execution: executions.Execution) -> None:
        """An open run recovered from the database: start it, queue it, or watch it."""
        run = Run.taken_over_from(execution)
        self._runs.add(run)
        now = self._now()
        if run.status is RunStatus.CLAIMED:
            # Claimed ahead of its tick by an earlier leader, maybe: not sent before it.
            self._timers.set(run.id, Kind.RESEND, run.tick or now)
        elif run.status is RunStatus.QUEUED:
            self._absorb_queued(run)
        else:
            self._timers.set(run.id, Kind.CHECK, now)
            self._watch_deadline(run)
        self._wake.set()

    async def recover(self) -> None:
        """Take over the open runs that earlier leaders left (called once, before ticking)."""
        await self._changes.start()
        found = await self._store.open_runs()
        for execution in found:
            self.submit(execution)
        if found:
            log.info("took over %d open runs from earlier epochs", len(found))

    async def run(self) -> None:
        """Until cancelled: read what changed, act on timers that came, release queues."""
        try:
            while True:
                await woken(self._wake, self._sleep_seconds())
                self._wake.clear()
                if not self._lease_valid():
                    await asyncio.sleep(CHANGES_SECONDS)  # nothing is done meanwhile: no spin
                    continue
                await self._read_changes()
                self._fire_timers(self._now())
                self._release_queues()
                active, queued = self._runs.totals()
                self._metrics.active.set(active)
                self._metrics.queued.set(queued)
                self._metrics.dispatches_waiting.set(self._act.waiting)
        finally:
            self._act.cancel_all()
            self._dispatcher.close()
            # Only the leader's counts are true: summed over replicas, each run counts once.
            self._metrics.active.set(0)
            self._metrics.queued.set(0)
            self._metrics.dispatches_waiting.set(0)

    def _sleep_seconds(self) -> float:
        poll = self._changes.seconds_to_poll()
        if (upcoming := self._timers.next_at()) is None:
            return poll
        return min(max((upcoming - self._now()).total_seconds(), 0.0), poll)

    # -- what changed -------------------------------------------------------------------------

    async def _read_changes(self) -> None:
        def ready(run_id: ExecutionId) -> bool:
            run = self._runs.get(run_id)
            return run is None or not run.busy  # a busy run is looked at once it is done

        ids = await self._changes.read(ready)
        if self._changes.behind:
            self._wake.set()
        rows = await self._store.current(ids)
        for run_id in ids:
            run, row = self._runs.get(run_id), rows.get(run_id)
            if run is not None and not run.busy:
                self._absorb(run, row)
            elif run is None and row is not None:
                # Let go of already (a lost run's late result): its Task's status tells it.
                self._on_change(row.task, None)

    def _absorb(self, run: Run, row: executions.RunState | None) -> None:
        """Take in the run's row as the store has it now."""
        if row is not None and row.status is RunStatus.CANCELLED and run.base_url:
            # Cancelled (through the API) while on its way to its pod: the canceller may have
            # asked the pod before it had the run, so the pod is told again now that it has it.
            self._act(run, self._stop_cancelled(run))
            return
        if row is None or row.status in TERMINAL:
            self._forget(run, row.status if row else None)
            return
        if row.status is RunStatus.QUEUED and run.status is not RunStatus.QUEUED:
            self._leave_pod(run)
            if row.next_attempt_at is not None:  # a retry the callback path decided
                self._metrics.retries.inc()
        run.status, run.attempt = row.status, row.attempt
        run.next_attempt_at, run.deadline_at = row.next_attempt_at, row.deadline_at
        if run.status is RunStatus.QUEUED:
            self._absorb_queued(run)
        elif run.status is RunStatus.CLAIMED:
            self._timers.set(run.id, Kind.RESEND, run.tick or self._now())
        else:
            self._watch_deadline(run)

    def _absorb_queued(self, run: Run) -> None:
        self._timers.cancel(run.id, Kind.OVERDUE)
        if run.next_attempt_at is not None:
            self._timers.set(run.id, Kind.RETRY, run.next_attempt_at)
        else:
            self._queue_changed(run.task)

    def _watch_deadline(self, run: Run) -> None:
        if run.deadline_at is not None:
            self._timers.set(run.id, Kind.OVERDUE, run.deadline_at + self._grace)

    # -- timers and queues --------------------------------------------------------------------

    def _fire_timers(self, now: datetime) -> None:
        for run_id, kind in self._timers.due(now):
            if (run := self._runs.get(run_id)) is None:
                continue
            if run.busy:
                self._timers.set(run_id, kind, now + RESEND_AFTER)
            elif kind is Kind.RETRY:
                self._start(run, run.attempt + 1)  # a retry's backoff is over
            elif kind is Kind.RESEND:
                if run.status is RunStatus.CLAIMED:
                    self._start(run, run.attempt)
                elif run.waiting_in_queue:
                    self._queue_changed(run.task)
                elif run.status is RunStatus.QUEUED:
                    self._start(run, run.attempt + 1)  # a retry that could not be sent
            elif kind is Kind.OVERDUE:
                self._act(run, self._overdue(run))
            elif kind is Kind.WITHDRAW and run.tick is not None and run.tick > now:
                self._act(run, self._cancel(run))
            elif kind is Kind.CHECK and run.taken_over:
                self._act(run, self._ask_pod(run))

    def _queue_changed(self, task: TaskUid) -> None:
        self._queues.add(task)
        self._wake.set()

    def _release_queues(self) -> None:
        """Start the queued runs that each Task's mode lets go now; the core decides which."""
        tasks, self._queues = self._queues, set()
        start, gone = self._runs.release(tasks, self._plans)
        for run in gone:
            self._act(run, self._cancel(run))
        for run in start:
            self._start(run, run.attempt)

    # -- actions ------------------------------------------------------------------------------

    def _start(self, run: Run, attempt: int) -> None:
        if not run.busy:
            self._act(run, self._dispatch(run, attempt))

    async def _dispatch(self, run: Run, attempt: int) -> None:
        plan = self._plans.get(run.task)
        if plan is None or run.unwanted(plan, attempt):
            await self._cancel(run)
            return
        try:
            sent = await self._dispatcher.attempt(run, plan, attempt)
        except Exception:
            self._timers.set(run.id, Kind.RESEND, self._now() + RESEND_AFTER)
            raise
        self._dispatched(run, attempt, sent)

    def _dispatched(self, run: Run, attempt: int, sent: Dispatched) -> None:
        if sent.how is Sent.RUNNING:
            self._watch_deadline(run)
            self._withdraw_if_unwanted(run)  # its Task went (or paused) while it was sent
            self._on_change(run.task, None)
        elif sent.how is Sent.ENDED:
            self._attempt_failed(run, attempt, RunStatus.FAILED, sent.retry_at, sent.error)
        elif sent.how is Sent.NOT_OURS:
            self.wake(run.id)
        else:  # not sent: offered again at its tick (AT_TICK), for room (NO_ROOM), or soon
            self._timers.set(run.id, Kind.RESEND, sent.retry_at or self._now() + RESEND_AFTER)
        self._queue_changed(run.task)

    async def _ask_pod(self, run: Run) -> None:
        settled = await self._settler.ask_pod(run)
        if settled is None:
            self._watch_deadline(run)  # a run sent again has a new one
            self._timers.set(run.id, Kind.CHECK, self._now() + TAKEN_OVER_CHECK)
        else:
            self._settled(run, settled)

    async def _overdue(self, run: Run) -> None:
        self._settled(run, await self._settler.overdue(run))

    def _settled(self, run: Run, settled: Settled) -> None:
        if not settled.applied:
            self.wake(run.id)  # the run changed meanwhile: read what it became
            return
        decision = settled.decision
        if isinstance(decision, rules.Retry):
            status, error = decision.outcome.status, decision.outcome.error
            self._attempt_failed(run, run.attempt, status, decision.at, error)
        else:
            self._forget(run, decision.outcome.status)

    def _withdraw_if_unwanted(self, run: Run) -> None:
        now = self._now()
        if run.unwanted(self._plans.get(run.task), run.attempt) and run.held_for_tick(now):
            self._timers.set(run.id, Kind.WITHDRAW, now)

    async def _cancel(self, run: Run) -> None:
        """Its Task went, or was suspended before it started: cancelled, its pod told."""
        why = "the Task was deleted" if run.task not in self._plans else SUSPENDED
        if await self._settler.cancel(run, why):
            self._forget(run, RunStatus.CANCELLED)
        else:
            self.wake(run.id)

    async def _stop_cancelled(self, run: Run) -> None:
        told = await self._settler.stop_on_pod(run)
        log.info("run %s was cancelled: pod %s told (%s)", run.id, run.pod, told)
        self._forget(run, RunStatus.CANCELLED)

    def _attempt_failed(
        self, run: Run, attempt: int, status: RunStatus, at: datetime | None, error: str | None
    ) -> None:
        run.attempt = attempt
        if at is None:
            self._forget(run, status)
            return
        self._leave_pod(run)
        self._metrics.retries.inc()
        run.status, run.next_attempt_at = RunStatus.QUEUED, at
        self._timers.cancel(run.id, Kind.OVERDUE)
        self._timers.set(run.id, Kind.RETRY, at)
        log.info("run %s attempt %s failed (%s); retry at %s", run.id, attempt, error, at)
        self._on_change(run.task, None)

    def _forget(self, run: Run, status: RunStatus | None) -> None:
        if self._runs.remove(run.id) is None:
            return
        self._timers.clear(run.id)
        self._leave_pod(run)
        if status is not None:
            self._metrics.outcomes.labels(status=status.value).inc()
        self._on_change(run.task, None)
        self._queue_changed(run.task)  # a Sequential Task's next run may start now

    def _leave_pod(self, run: Run) -> None:
        if run.pod_uid and run.status is not RunStatus.QUEUED:
            self._pool.note_finished(run.pod_uid)
        run.pod_uid, run.base_url, run.token = None, None, None

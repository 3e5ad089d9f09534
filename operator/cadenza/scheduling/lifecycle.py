"""The life of a run on the leader: dispatch, queues, retries, timeouts, recovery.

A claimed run is sent to one pod chosen by the Task's strategy among the healthy pods of its
Executors (lower priority tiers first). A pod that refuses (busy, draining, unreachable, wrong
token) is passed over for the next; when none is left the attempt fails with the reasons. Results
arrive by callback at any replica, which writes them as guarded transitions; the leader learns of
them by re-reading its open runs (at once when the callback reached this replica, else within
``RECONCILE_SECONDS``).

Invariants:
- The per-run token's hash and the chosen pod are committed before the request leaves, so the
  fastest callback finds them; every leader write is fenced by the epoch.
- A retry is a new attempt of the same run with a new execution key (``<id>-<attempt>``: the
  sidecar keeps the first body of a key forever) and prefers a pod no earlier attempt used.
- Sequential Tasks run one at a time across all pods: a queued run starts only when the Task
  has no run in flight, oldest first.
- A run never stays in flight forever: past its deadline plus a grace the leader cancels it on
  the pod and, if the pod cannot say what became of it, marks it ``lost`` (and retries it if the
  policy allows). ``lost`` may still be corrected by the real result.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import random
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cadenza.core import modes, strategies
from cadenza.core import retry as retry_
from cadenza.core import runs as rules
from cadenza.core.ids import Epoch, ExecutionId, PodName, TaskUid
from cadenza.core.transitions import TERMINAL, RunStatus
from cadenza.dispatch.client import DispatchClient, DispatchRequest, DispatchResult, Outcome
from cadenza.executors.members import PodCandidate
from cadenza.executors.pool import ExecutorPool
from cadenza.metrics import Metrics
from cadenza.scheduling.plans import TaskPlan
from cadenza.store import executions, fencing
from cadenza.store.port import Balance, Begin, RunStore
from cadenza.store.runs import Dispatch

log = logging.getLogger(__name__)

RECONCILE_SECONDS = 0.5
TAKEN_OVER_CHECK = timedelta(seconds=2)
"""How often a new leader asks a pod about a run an earlier leader dispatched there."""


def execution_key(run: ExecutionId, attempt: int) -> str:
    return f"{run}-{attempt}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclasses.dataclass
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
    token: str | None = None
    deadline_at: datetime | None = None
    next_attempt_at: datetime | None = None
    used_pods: set[str] = dataclasses.field(default_factory=set)
    dispatching: bool = False
    taken_over: bool = False
    """Dispatched by an earlier leader: its callback may be addressed to a replica that is gone,
    so this leader asks the pod how it went."""
    next_check: datetime | None = None


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
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._epoch = epoch
        self._plans = plans
        self._pool = pool
        self._client = client
        self._callback_base_url = callback_base_url.rstrip("/")
        self._metrics = metrics
        self._on_change = on_change
        self._lease_valid = lease_valid
        self._grace = timedelta(seconds=deadline_grace_seconds)
        self._rng = rng or random.Random()
        self._now = clock
        self._runs: dict[ExecutionId, Run] = {}
        self._balance: dict[tuple[TaskUid, str], dict[str, Any]] = {}
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- what others ask ----------------------------------------------------------------------

    def in_flight(self, task: TaskUid) -> int:
        return sum(
            1 for r in self._runs.values() if r.task == task and r.status is not RunStatus.QUEUED
        )

    def queued(self, task: TaskUid) -> int:
        return sum(
            1 for r in self._runs.values() if r.task == task and r.status is RunStatus.QUEUED
        )

    def open_runs(self, task: TaskUid) -> list[Run]:
        return sorted((r for r in self._runs.values() if r.task == task), key=lambda r: r.id)

    def wake(self) -> None:
        """A run may have changed elsewhere (a callback reached this replica)."""
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
    ) -> None:
        """A run the scheduler just claimed: start it now, or queue it."""
        run = Run(run_id, task, 1, status, tick, requested_at, origin)
        self._runs[run.id] = run
        if status is RunStatus.CLAIMED:
            self._start(run, 1)
        else:
            self._wake.set()

    def skipped(self, task: TaskUid, run_id: ExecutionId) -> None:
        """The scheduler recorded a skipped tick (the Task's mode said so)."""
        self._metrics.outcomes.labels(status=RunStatus.SKIPPED.value).inc()
        self._on_change(task, None)

    def submit(self, execution: executions.Execution) -> None:
        """An open run recovered from the database: start it, queue it, or watch it."""
        run = Run(
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
        self._runs[run.id] = run
        if run.status is RunStatus.CLAIMED:
            # An earlier leader may have claimed it within the scheduler's lookahead: not
            # before its tick.
            wait = self._until_tick(run, self._now())
            if wait > 0:
                asyncio.get_running_loop().call_later(wait, self._start, run, run.attempt)
            else:
                self._start(run, run.attempt)
        else:
            self._wake.set()

    def _until_tick(self, run: Run, now: datetime) -> float:
        """Seconds until a scheduled run's tick (0 when due, or not a scheduled run)."""
        if run.origin != "schedule" or run.scheduled_at is None:
            return 0.0
        return max((run.scheduled_at - now).total_seconds(), 0.0)

    async def recover(self) -> None:
        """Take over the open runs that earlier leaders left (called once, before ticking)."""
        found = await self._store.open_runs()
        for execution in found:
            self.submit(execution)
        if found:
            log.info("took over %d open runs from earlier epochs", len(found))

    async def run(self) -> None:
        """Reconcile until cancelled: results, due retries, queue heads, overdue runs."""
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), RECONCILE_SECONDS)
                self._wake.clear()
                await self._reconcile()
        finally:
            for task in self._tasks:
                task.cancel()

    # -- reconciling --------------------------------------------------------------------------

    async def _reconcile(self) -> None:
        if not self._lease_valid():
            return
        watched = [r.id for r in self._runs.values() if not r.dispatching]
        latest = await self._store.current(watched)
        now = self._now()
        waiting: dict[TaskUid, list[Run]] = {}
        for run_id in watched:
            run = self._runs.get(run_id)
            if run is None or run.dispatching:
                continue
            row = latest.get(run_id)
            if row is None or row.status in TERMINAL:
                self._forget(run, row)
                continue
            run.status, run.next_attempt_at = row.status, row.next_attempt_at
            if row.attempt != run.attempt:
                run.attempt = row.attempt
            if run.status is RunStatus.QUEUED:
                if run.next_attempt_at is None:
                    waiting.setdefault(run.task, []).append(run)
                elif run.next_attempt_at <= now:
                    self._start(run, run.attempt + 1)  # a retry's backoff is over
            elif run.status is RunStatus.CLAIMED and not self._until_tick(run, now):
                # A claimed run idle here was not sent: the lease was in doubt at its tick, or
                # its dispatch raised (logged by _log_failure), or it was taken over before its
                # tick. Without another try it would count as in flight forever.
                self._start(run, run.attempt)
            elif run.status in (RunStatus.RUNNING, RunStatus.DISPATCHED):
                if run.taken_over and (run.next_check is None or run.next_check <= now):
                    run.next_check = now + TAKEN_OVER_CHECK
                    run.dispatching = True
                    self._spawn(self._ask_pod(run))
                else:
                    self._check_overdue(run, row, now)
        self._release_queues(waiting)
        self._metrics.active.set(
            sum(1 for r in self._runs.values() if r.status is not RunStatus.QUEUED)
        )
        self._metrics.queued.set(
            sum(1 for r in self._runs.values() if r.status is RunStatus.QUEUED)
        )

    def _forget(self, run: Run, row: executions.Execution | None) -> None:
        del self._runs[run.id]
        if run.pod_uid and run.status is not RunStatus.QUEUED:
            self._pool.note_finished(run.pod_uid)
        if row is not None:
            self._metrics.outcomes.labels(status=row.status.value).inc()
        self._on_change(run.task, row)
        # A Sequential Task's next run may start now.
        self._wake.set()

    def _release_queues(self, waiting: Mapping[TaskUid, list[Run]]) -> None:
        """Start the queued runs that each Task's mode lets go now; the core decides which."""
        for task, queue in waiting.items():
            plan = self._plans.get(task)
            if plan is None:
                for run in queue:
                    self._spawn(self._finish(run, RunStatus.CANCELLED, "the Task was deleted"))
                continue
            # A queued run on its way to a pod is active already: it must not let a second go.
            active = sum(
                1
                for r in self._runs.values()
                if r.task == task and (r.status is not RunStatus.QUEUED or r.dispatching)
            )
            ready = {r.id: r for r in queue}
            released = modes.next_from_queue(
                plan.mode,
                active,
                [modes.QueuedRun(r.id, r.scheduled_at or r.requested_at) for r in queue],
                plan.max_concurrent,
            )
            for item in released:
                run = ready[item.execution_id]
                self._start(run, run.attempt)

    def _check_overdue(self, run: Run, row: executions.Execution, now: datetime) -> None:
        deadline = row.deadline_at
        if deadline is None or now < deadline + self._grace:
            return
        if run.dispatching:
            return
        run.dispatching = True
        self._spawn(self._settle_overdue(run))

    async def _settle_overdue(self, run: Run) -> None:
        """The pod did not report in time: cancel there, and count the attempt as lost."""
        try:
            if run.base_url is None:
                self._locate(run)
            if run.base_url:
                cancelled = await self._client.cancel(
                    run.base_url, run.token, execution_key(run.id, run.attempt)
                )
                log.warning(
                    "run %s attempt %s overdue on %s (cancel %s)",
                    run.id,
                    run.attempt,
                    run.pod,
                    "sent" if cancelled else "failed",
                )
            await self._fail(
                run,
                RunStatus.LOST,
                f"no result from pod {run.pod} by the deadline; the pod did not report back",
            )
        finally:
            run.dispatching = False

    async def _ask_pod(self, run: Run) -> None:
        """Settle a taken-over run from what its pod says (same execution key, so the pod
        answers for the very attempt it ran): its result, or that it never had it."""
        try:
            if run.base_url is None:
                self._locate(run)
            if run.base_url is None:
                return  # the pod is not a candidate now: the deadline check settles it
            view = await self._client.view(
                run.base_url, run.token, execution_key(run.id, run.attempt)
            )
            if view is None:
                return
            if not view:
                await self._fail(run, RunStatus.LOST, f"pod {run.pod} does not know the run")
                return
            state = str(view.get("state"))
            outcome = rules.after_pod_view(state, view)
            if outcome is None:
                return
            if outcome.status in (RunStatus.FAILED, RunStatus.TIMED_OUT):
                await self._fail(run, outcome.status, outcome.error or state)
            else:
                await self._store.end_attempt(run.id, run.attempt, rules.Finish(outcome))
                self._wake.set()
            log.info("run %s taken over: pod %s says %s", run.id, run.pod, state)
        finally:
            run.dispatching = False

    def _locate(self, run: Run) -> None:
        """Find the pod of a run taken over from an earlier leader (to cancel it there)."""
        plan = self._plans.get(run.task)
        if plan is None or run.pod is None:
            return
        for pod in self._pool.candidates(plan.namespace, [e.name for e in plan.executors]):
            if pod.pod == run.pod:
                run.pod_uid, run.base_url, run.token = pod.pod_uid, pod.base_url, pod.token

    # -- dispatching --------------------------------------------------------------------------

    def _start(self, run: Run, attempt: int) -> None:
        if run.dispatching:
            return
        run.dispatching = True
        self._spawn(self._dispatch(run, attempt))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)

    async def _dispatch(self, run: Run, attempt: int) -> None:
        try:
            await self._dispatch_attempt(run, attempt)
        finally:
            run.dispatching = False

    async def _dispatch_attempt(self, run: Run, attempt: int) -> None:
        plan = self._plans.get(run.task)
        if plan is None:
            await self._finish(run, RunStatus.CANCELLED, "the Task was deleted")
            return
        names = [e.name for e in plan.executors]
        found = self._pool.candidates(plan.namespace, names)
        # Pods that look full come last: their counts may be a probe behind, so they are still
        # tried once every pod with room refused (the sidecar's 429 is the real limit).
        refusals: list[str] = []
        for group in ([c for c in found if not c.full], [c for c in found if c.full]):
            pods = {c.pod: c for c in group}
            while pods:
                chosen = await self._choose(plan, pods, run.used_pods)
                if chosen is None:
                    break
                del pods[chosen.pod]
                after, reason = await self._send(run, plan, attempt, chosen)
                if after is None or after is rules.AfterAnswer.RUNNING:
                    return  # the pod has it, or the run is no longer ours to send
                refusals.append(f"{chosen.pod}: {reason}")
                if after is rules.AfterAnswer.END_ATTEMPT:
                    # Every pod would refuse this request alike: asking them all helps nobody.
                    await self._give_up(run, attempt, f"the run was refused ({refusals[-1]})")
                    return
        detail = "; ".join(refusals) or f"no healthy pod of executor {', '.join(names)}"
        await self._give_up(run, attempt, f"no executor pod accepted the run ({detail})")

    async def _choose(
        self, plan: TaskPlan, pods: Mapping[str, PodCandidate], used: set[str]
    ) -> PodCandidate | None:
        candidates = []
        for c in pods.values():
            entry = plan.entry(c.executor)
            candidates.append(
                strategies.Candidate(
                    name=PodName(c.pod),
                    executor=c.executor,
                    weight=c.weight if c.weight is not None else (entry.weight if entry else 1),
                    priority=entry.priority if entry else 0,
                    in_flight=c.in_flight,
                )
            )
        state = await self._balance_state(plan)
        picked = strategies.pick(
            plan.strategy,
            candidates,
            state,
            str(plan.uid),
            self._rng,
            exclude=frozenset(PodName(p) for p in used),
        )
        if picked is None:
            return None
        self._balance[(plan.uid, plan.strategy.value)] = dict(picked.state)
        return pods[picked.pod]

    async def _send(
        self, run: Run, plan: TaskPlan, attempt: int, pod: PodCandidate
    ) -> tuple[rules.AfterAnswer | None, str]:
        """What the run rules say after ``pod`` answered, with the pod's reason for a refusal;
        None when the run is no longer ours to send."""
        if not self._lease_valid():
            return None, "lease in doubt"
        token = secrets.token_urlsafe(32)
        deadline = self._now() + timedelta(seconds=plan.timeout_seconds)
        key = (plan.uid, plan.strategy.value)
        begin = Begin(
            run.id,
            attempt,
            Dispatch(pod.executor, pod.pod, pod.ip, token_hash(token), deadline),
            Balance(plan.uid, plan.strategy.value, self._balance.get(key, {})),
        )
        if not await self._store.begin_dispatch(begin):
            return None, "not dispatchable"
        if not self._lease_valid():
            # The last good heartbeat is too old to be sure nobody else leads: do not send. The
            # run stays dispatched to no answer; whoever leads next settles it by its deadline.
            log.warning("lease in doubt: not sending run %s", run.id)
            return None, "lease in doubt"
        back_to = run.status
        run.pod, run.pod_uid, run.base_url, run.token = (
            pod.pod,
            pod.pod_uid,
            pod.base_url,
            pod.token,
        )
        run.attempt, run.status, run.deadline_at = attempt, RunStatus.DISPATCHED, deadline
        run.used_pods.add(pod.pod)
        result = await self._client.send(
            pod.base_url, pod.token, self._request(run, plan, attempt, token)
        )
        self._metrics.dispatches.labels(outcome=result.outcome.value).inc()
        after = rules.after_answer(_answer(result))
        if after is rules.AfterAnswer.RUNNING:
            if result.started:
                self._observe_delay(run, attempt)  # the pod's acceptance, not our bookkeeping
                await self._store.confirm(run.id, attempt)
                self._pool.note_dispatched(pod.pod_uid)
            run.status = RunStatus.RUNNING
            self._on_change(run.task, None)
            return after, ""
        log.info("pod %s refused run %s: %s", pod.pod, run.id, result.error)
        if result.outcome is Outcome.UNREACHABLE:
            self._pool.note_dispatch_error(pod.pod_uid, result.error or "unreachable")
        elif result.status == 401:
            self._pool.note_token_rejected(pod.executor_uid)
        # The row stays pointed at this pod until the next one is recorded (or the attempt is
        # given up): both are allowed from a refused attempt, so no write is needed here.
        run.status, run.pod, run.pod_uid, run.base_url, run.token = back_to, None, None, None, None
        return after, result.error or result.outcome.value

    def _request(self, run: Run, plan: TaskPlan, attempt: int, token: str) -> DispatchRequest:
        return DispatchRequest(
            execution_key=execution_key(run.id, attempt),
            task_uid=str(plan.uid),
            task=plan.key,
            epoch=int(self._epoch),
            handler=plan.handler,
            payload=plan.payload,
            scheduled_at=run.scheduled_at or run.requested_at,
            attempt=attempt,
            timeout_seconds=plan.timeout_seconds,
            callback_url=f"{self._callback_base_url}/api/v1/callbacks/{run.id}",
            callback_token=token,
        )

    def _observe_delay(self, run: Run, attempt: int) -> None:
        if attempt == 1 and run.scheduled_at is not None and run.origin == "schedule":
            delay = (self._now() - run.scheduled_at).total_seconds()
            self._metrics.fire_delay.observe(max(delay, 0.0))

    # -- ending attempts ----------------------------------------------------------------------

    def _policy(self, run: Run) -> retry_.RetryPolicy:
        plan = self._plans.get(run.task)
        return plan.retry if plan else retry_.NO_RETRY

    async def _give_up(self, run: Run, attempt: int, error: str) -> None:
        """No pod took ``attempt``: it counts as a failed attempt."""
        outcome = rules.Outcome(status=RunStatus.FAILED, error=error)
        decision = rules.after_bad_attempt(
            self._policy(run), attempt, outcome, self._now(), self._rng
        )
        at = decision.at if isinstance(decision, rules.Retry) else None
        if await self._store.give_up(run.id, attempt, outcome, at):
            self._after_failure(run, attempt, error, at)

    async def _fail(self, run: Run, status: RunStatus, error: str) -> None:
        """End the dispatched attempt badly: retry if the policy allows, else finish the run."""
        outcome = rules.Outcome(status=status, error=error)
        decision = rules.after_bad_attempt(
            self._policy(run), run.attempt, outcome, self._now(), self._rng
        )
        applied = await self._store.end_attempt(run.id, run.attempt, decision)
        if isinstance(decision, rules.Finish):
            self._wake.set()
        elif applied:
            self._after_failure(run, run.attempt, error, decision.at)

    def _after_failure(self, run: Run, attempt: int, error: str, at: datetime | None) -> None:
        run.attempt = attempt
        if at is not None:
            self._metrics.retries.inc()
            run.status, run.next_attempt_at = RunStatus.QUEUED, at
            log.info("run %s attempt %s failed (%s); retry at %s", run.id, attempt, error, at)
        self._on_change(run.task, None)
        self._wake.set()

    async def _finish(self, run: Run, status: RunStatus, error: str | None) -> None:
        outcome = rules.Outcome(status=status, error=error)
        await self._store.end_attempt(run.id, run.attempt, rules.Finish(outcome))
        self._wake.set()

    async def _balance_state(self, plan: TaskPlan) -> dict[str, Any]:
        key = (plan.uid, plan.strategy.value)
        if key not in self._balance:
            loaded = await self._store.balance_state(plan.uid, plan.strategy.value)
            # Two dispatches may load at once (a new leader re-sending runs it took over while
            # the first ticks fire): the one that resumes second must see the first one's pick,
            # or both would pick the same pod.
            self._balance.setdefault(key, loaded)
        return self._balance[key]


def _answer(result: DispatchResult) -> rules.Answer:
    """The run rules' view of a pod's answer."""
    if result.started:
        return rules.Answer.STARTED
    if result.may_have_started:
        return rules.Answer.MAYBE_STARTED
    if result.outcome is Outcome.BUSY:
        return rules.Answer.BUSY
    if result.outcome is Outcome.DRAINING:
        return rules.Answer.DRAINING
    if result.outcome is Outcome.UNREACHABLE:
        return rules.Answer.UNREACHABLE
    return rules.Answer.POD_REFUSED if result.try_another_pod else rules.Answer.MALFORMED


def _log_failure(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None and not isinstance(exc, fencing.Fenced):
        log.error("run handling failed: %r", exc, exc_info=exc)

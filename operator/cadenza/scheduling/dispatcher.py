"""Sending one attempt of a run to one pod: choose the pod, record it, send, hear the answer.

The Task's strategy picks among the healthy pods of its Executors (lower priority tiers first;
pods that look full last, since their counts may be a probe behind). What a pod's answer leads
to is the core's decision (:func:`cadenza.core.runs.after_answer`): a busy, draining or
unreachable pod passes the attempt to the next pod at once, a request every pod would refuse
ends the attempt. When every pod answered busy, the attempt waits for room and is offered again
(:func:`cadenza.core.runs.offer_again_at`) until the Task's ``startingDeadlineSeconds``, else
its ``timeoutSeconds``, after it was due; when no pod is left otherwise, or that wait is over,
the attempt counts as failed — retried or final by the Task's retry policy.

Invariants:
- The pod, the deadline and the per-run token's hash are committed (through the store port)
  before the request leaves, so the fastest callback finds them.
- Nothing is sent while the leader's lease is in doubt.
- A scheduled run handed over before its tick is offered only to pods whose sidecar holds runs
  (protocol version 3), with ``startAt`` set to the tick: the pod starts it then, and its
  deadline counts from the tick. No pod of them taking it, it is offered to all at the tick.
- Runs due together for the same pod travel in one batch request (``POST
  /v1/executions:batch``); the pod answers each on its own, with the same idempotency per run.
  A run alone is sent at once: no timer holds it back.
- Balancer state is kept per Task only while the Task has a plan (:meth:`Dispatcher.forget`
  drops it when the Task goes; a dispatch in flight then does not bring it back), and an outbox
  only while a request to its pod is in flight: pods and Tasks that went leave nothing behind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import random
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from cadenza import failpoints
from cadenza.core import retry as retry_
from cadenza.core import runs as rules
from cadenza.core import strategies
from cadenza.core.ids import Epoch, PodName, TaskUid
from cadenza.core.transitions import RunStatus
from cadenza.dispatch.callback_tokens import CallbackTokens, token_hash
from cadenza.dispatch.client import DispatchClient, DispatchRequest, DispatchResult, Outcome
from cadenza.dispatch.credentials import DispatchToken
from cadenza.dispatch.outbox import Outbox
from cadenza.executors.members import PodCandidate
from cadenza.executors.pool import ExecutorPool
from cadenza.metrics import Metrics
from cadenza.scheduling.openruns import Run
from cadenza.scheduling.plans import TaskPlan
from cadenza.store.port import Balance, Begin, RunStore
from cadenza.store.runs import Dispatch

log = logging.getLogger(__name__)


def execution_key(run: int, attempt: int) -> str:
    """The idempotency key a pod knows an attempt by: the sidecar keeps the first body of a key
    forever, so every attempt needs its own."""
    return f"{run}-{attempt}"


class Sent(enum.Enum):
    RUNNING = "running"
    """A pod has the attempt (or may have it: its answer got lost)."""
    ENDED = "ended"
    """No pod took it: the attempt was closed as failed (see ``retry_at``)."""
    NOT_OURS = "not_ours"
    """The run was no longer waiting to be sent (it changed elsewhere)."""
    NOT_SENT = "not_sent"
    """Nothing was sent (the lease was in doubt, or the Task went or paused while the run waited
    for its send time): look at it again at ``retry_at``, else soon."""
    AT_TICK = "at_tick"
    """Offered ahead of its tick, no pod took it yet: offer it again at the tick
    (``retry_at``), when every pod is asked as usual."""
    NO_ROOM = "no_room"
    """Every pod answered busy: offer the same attempt again at ``retry_at``."""


@dataclasses.dataclass(frozen=True)
class Dispatched:
    how: Sent
    retry_at: datetime | None = None
    """With ``ENDED``: when the next attempt is due, None when the run is over; with
    ``AT_TICK``: the tick; with ``NO_ROOM``: the next offer; with ``NOT_SENT``: the next look."""
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class _Refused:
    reason: str
    final: bool
    """Every pod would refuse it alike."""
    busy: bool = False
    """The pod had no room for it now (429)."""


class Dispatcher:
    def __init__(
        self,
        *,
        store: RunStore,
        epoch: Epoch,
        pool: ExecutorPool,
        plans: Mapping[TaskUid, TaskPlan],
        client: DispatchClient,
        callback_base_url: str,
        metrics: Metrics,
        lease_valid: Callable[[], bool],
        rng: random.Random,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._plans = plans
        self._epoch = epoch
        self._pool = pool
        self.client = client
        """How this leader speaks to pods (the settler asks and cancels through it too)."""
        self._callback_base_url = callback_base_url.rstrip("/")
        self._tokens = CallbackTokens()
        self._metrics = metrics
        # Labelled once: a labels() lookup per run was a twentieth of the event loop's time at
        # 1,000 runs a second.
        self._balance_gauge = metrics.tasks_tracked.labels(part="balance")
        self._dispatch_counters = {o: metrics.dispatches.labels(outcome=o.value) for o in Outcome}
        self._lease_valid = lease_valid
        self._rng = rng
        self._now = clock
        self._balance: dict[TaskUid, tuple[strategies.Strategy, dict[str, Any]]] = {}
        """Each Task's balancer state, for the strategy it was kept for."""
        self._outboxes: dict[tuple[str, DispatchToken | None], Outbox] = {}

    def forget(self, task: TaskUid) -> None:
        """The Task went: its balancer state goes (the store keeps its row until the mirror
        deletes the Task's)."""
        if self._balance.pop(task, None) is not None:
            self._count()

    def close(self) -> None:
        """The leader stops: nothing is kept."""
        self._balance.clear()
        self._outboxes.clear()
        self._count()

    def _count(self) -> None:
        self._balance_gauge.set(len(self._balance))

    def ahead_of(self, run: Run) -> datetime | None:
        """The run's tick while it is still to come: a scheduled run handed over within the
        scheduler's lookahead, which a pod that holds runs may be sent now."""
        tick = run.scheduled_at
        if run.origin != "schedule" or tick is None or tick <= self._now():
            return None
        return tick

    def sends_ahead(self, plan: TaskPlan) -> bool:
        """A run of the Task may be sent ahead of its tick: one of its pods holds runs."""
        return self._pool.holds_runs(plan.namespace, [e.name for e in plan.executors])

    async def attempt(self, run: Run, plan: TaskPlan, attempt: int) -> Dispatched:
        """Offer ``attempt`` of ``run`` to the Task's pods until one takes it.

        Before its tick only pods that hold runs are offered it, with ``startAt`` (their
        sidecar starts it at the tick); when none takes it, it is offered to every pod at the
        tick (a pod busy now may have room by then)."""
        names = [e.name for e in plan.executors]
        found = self._pool.candidates(plan.namespace, names)
        ahead = self.ahead_of(run)
        if ahead is not None:
            found = [c for c in found if c.holds_runs]
        # Pods that look full come last: their counts may be a probe behind, so they are still
        # tried once every pod with room refused (the sidecar's 429 is the real limit).
        refusals: list[str] = []
        all_busy = True
        for group in ([c for c in found if not c.full], [c for c in found if c.full]):
            pods = {c.pod: c for c in group}
            while pods:
                chosen = await self._choose(plan, pods, run.used_pods)
                if chosen is None:
                    break
                del pods[chosen.pod]
                answer = await self._send(run, plan, attempt, chosen, ahead)
                if isinstance(answer, Dispatched):
                    return answer
                refusals.append(f"{chosen.pod}: {answer.reason}")
                all_busy = all_busy and answer.busy
                if answer.final:
                    # Every pod would refuse this request alike: asking them all helps nobody.
                    return await self.give_up(
                        run, plan.retry, attempt, f"the run was refused ({refusals[-1]})"
                    )
        if ahead is not None:
            return Dispatched(Sent.AT_TICK, ahead)
        may_wait = plan.starting_deadline_seconds or plan.timeout_seconds
        if refusals and all_busy:
            run.room_waits += 1
            due = run.due(attempt)
            again = rules.offer_again_at(due, self._now(), run.room_waits, may_wait, self._rng)
            if again is not None:
                return Dispatched(Sent.NO_ROOM, again)
        detail = "; ".join(refusals) or f"no healthy pod of executor {', '.join(names)}"
        error = f"no executor pod accepted the run ({detail})"
        if run.room_waits > 1:
            error += f"; offered {run.room_waits} times within {may_wait} s of its time"
        run.room_waits = 0
        return await self.give_up(run, plan.retry, attempt, error)

    async def send_again(self, run: Run, plan: TaskPlan, pod: PodCandidate) -> bool:
        """Send the run's current attempt to ``pod`` again, under the same execution key (an
        earlier leader recorded it there and died before the pod had it); False when the pod
        refused it now. Refused, the run keeps its deadline, so that asking again ends there."""
        deadline = run.deadline_at
        start_at = self.ahead_of(run) if pod.holds_runs else None
        if isinstance(await self._send(run, plan, run.attempt, pod, start_at), Dispatched):
            return True
        run.pod, run.deadline_at = pod.pod, deadline  # the row still points there
        return False

    async def give_up(
        self, run: Run, policy: retry_.RetryPolicy, attempt: int, error: str
    ) -> Dispatched:
        """No pod took ``attempt``: it counts as failed; the policy says retry or finish."""
        outcome = rules.Outcome(status=RunStatus.FAILED, error=error)
        decision = rules.after_bad_attempt(policy, attempt, outcome, self._now(), self._rng)
        at = decision.at if isinstance(decision, rules.Retry) else None
        if not await self._store.give_up(run.id, attempt, outcome, at):
            return Dispatched(Sent.NOT_OURS)
        return Dispatched(Sent.ENDED, at, error)

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
        self._keep(plan, dict(picked.state))
        return pods[picked.pod]

    async def _balance_state(self, plan: TaskPlan) -> dict[str, Any]:
        state = self._kept(plan)
        if state is None:
            loaded = await self._store.balance_state(plan.uid, plan.strategy.value)
            # Two dispatches may load at once (a new leader re-sending runs it took over while
            # the first ticks fire): the one that resumes second must see the first one's pick,
            # or both would pick the same pod.
            state = self._kept(plan)
            if state is None:
                state = loaded
                self._keep(plan, loaded)
        return state

    def _kept(self, plan: TaskPlan) -> dict[str, Any] | None:
        """The Task's balancer state for its plan's strategy, if kept."""
        strategy, state = self._balance.get(plan.uid, (None, None))
        return state if strategy is plan.strategy else None

    def _keep(self, plan: TaskPlan, state: dict[str, Any]) -> None:
        if plan.uid in self._plans:  # not for a Task that went while this dispatch waited
            known = plan.uid in self._balance
            self._balance[plan.uid] = (plan.strategy, state)
            if not known:
                self._count()

    async def _send(
        self,
        run: Run,
        plan: TaskPlan,
        attempt: int,
        pod: PodCandidate,
        start_at: datetime | None,
    ) -> Dispatched | _Refused:
        """The attempt's fate when this pod settles it, or the pod's refusal. With
        ``start_at`` the pod is to start it then, and the deadline counts from it."""
        if not self._lease_valid():
            return Dispatched(Sent.NOT_SENT)
        token = self._tokens.new()
        now = self._now()
        start = max(start_at, now) if start_at is not None else now
        deadline = start + timedelta(seconds=plan.timeout_seconds)
        kept = self._kept(plan)  # None when sent again before any pick: the saved state stays
        begin = Begin(
            run.id,
            attempt,
            Dispatch(pod.executor, pod.pod, pod.ip, token_hash(token), deadline),
            None if kept is None else Balance(plan.uid, plan.strategy.value, kept),
        )
        if not await self._store.begin_dispatch(begin):
            return Dispatched(Sent.NOT_OURS)
        failpoints.reached("before-send")
        if start_at is not None and run.send_at is not None:
            # Recorded when claimed, sent at the send lead: the tick's bookkeeping is done by then.
            wait, run.send_at = (run.send_at - self._now()).total_seconds(), None
            if wait > 0:
                await asyncio.sleep(wait)
            if run.unwanted(self._plans.get(run.task), attempt):
                return Dispatched(Sent.NOT_SENT, self._now())  # not sent, to be cancelled now
        if not self._lease_valid():
            # The last good heartbeat is too old to be sure nobody else leads: do not send. The
            # run stays dispatched to no answer and is settled by its deadline.
            log.warning("lease in doubt: not sending run %s", run.id)
            run.attempt, run.status, run.deadline_at = attempt, RunStatus.DISPATCHED, deadline
            return Dispatched(Sent.RUNNING)
        back_to, back_attempt = run.status, run.attempt
        run.pod, run.pod_uid = pod.pod, pod.pod_uid
        run.base_url, run.token = pod.base_url, pod.token
        run.attempt, run.status, run.deadline_at = attempt, RunStatus.DISPATCHED, deadline
        run.used_pods.add(pod.pod)
        result = await self._sent(pod, self._request(run, plan, attempt, token, start_at))
        self._dispatch_counters[result.outcome].inc()
        after = rules.after_answer(result.answer)
        if after is rules.AfterAnswer.RUNNING:
            if result.started:
                failpoints.reached("after-dispatch")
                self._observe_delay(run, attempt)  # the pod's acceptance, not our bookkeeping
                await self._store.confirm(run.id, attempt)
                self._pool.note_dispatched(pod.pod_uid)
            run.status, run.room_waits = RunStatus.RUNNING, 0
            return Dispatched(Sent.RUNNING)
        log.info("pod %s refused run %s: %s", pod.pod, run.id, result.error)
        if result.outcome is Outcome.UNREACHABLE:
            self._pool.note_dispatch_error(pod.pod_uid, result.error or "unreachable")
        elif result.status == 401:
            self._pool.note_token_rejected(pod.executor_uid)
        # The row stays pointed at this pod until the next one is recorded (or the attempt is
        # given up): both are allowed from a refused attempt, so no write is needed here.
        run.status, run.pod, run.pod_uid, run.base_url, run.token = back_to, None, None, None, None
        run.attempt = back_attempt  # a retry refused everywhere is offered again as the same
        return _Refused(
            result.error or result.outcome.value,
            final=after is rules.AfterAnswer.END_ATTEMPT,
            busy=result.outcome is Outcome.BUSY,
        )

    async def _sent(self, pod: PodCandidate, request: DispatchRequest) -> DispatchResult:
        """The pod's answer to ``request``, sent through its outbox."""
        key = (pod.base_url, pod.token)
        box = self._outboxes.get(key)
        if box is None:
            box = self._outboxes[key] = Outbox(self.client, pod.base_url, pod.token)
        try:
            return await box.send(request)
        finally:
            # Idle, it batches nothing: kept, the outboxes of every pod (and token) ever used
            # would pile up.
            if box.sending == 0 and self._outboxes.get(key) is box:
                del self._outboxes[key]

    def _request(
        self, run: Run, plan: TaskPlan, attempt: int, token: str, start_at: datetime | None
    ) -> DispatchRequest:
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
            # Results travel back batched too, each with its own token (protocol version 2).
            callback_batch_url=f"{self._callback_base_url}/api/v1/callbacks",
            deadline=run.deadline_at,
            start_at=start_at,
        )

    def _observe_delay(self, run: Run, attempt: int) -> None:
        # A run a pod holds for its tick was accepted ahead of it: it counts as 0.
        if attempt == 1 and run.scheduled_at is not None and run.origin == "schedule":
            delay = (self._now() - run.scheduled_at).total_seconds()
            self._metrics.fire_delay.observe(max(delay, 0.0))

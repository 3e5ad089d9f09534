"""A scheduled run handed over before its tick goes at once to a pod whose sidecar holds runs
(protocol version 3), with ``startAt`` set to the tick and the deadline counted from it, so that
nothing is left for the leader to do at the tick. A pod that does not hold runs gets it at the
tick, as before; a pod busy ahead of the tick is asked again at the tick. Driven over the
in-memory store with pods that answer from what they are sent."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cadenza.core.ids import ExecutionId, TaskUid
from cadenza.core.transitions import RunStatus
from cadenza.dispatch.answers import probe_result
from cadenza.dispatch.client import DispatchRequest, DispatchResult, Outcome
from cadenza.executors.members import PodCandidate
from cadenza.kube.views import TaskView
from cadenza.metrics import Metrics
from cadenza.scheduling.lifecycle import Lifecycle
from cadenza.scheduling.plans import TaskPlan, plan_of
from cadenza.store.executions import Origin
from cadenza.store.memory import MemoryRunStore
from cadenza.store.port import NewRun
from tests.unit.test_cancel_during_dispatch import POD, TASK, until

HOLDING = dataclasses.replace(POD, holds_runs=True)
TIMEOUT = 30
SPEC = {"schedule": "* * * * * *", "executors": [{"name": "workers"}], "timeoutSeconds": TIMEOUT}


def plan(**spec: Any) -> TaskPlan:
    """The every-second Task's plan, with ``spec`` over its usual one."""
    return plan_of(TaskView.of(str(TASK), "ns", "ahead", 1, {**SPEC, **spec}))


class Pool:
    """The Task's one pod, holding runs or not."""

    def __init__(self, pod: PodCandidate) -> None:
        self.pod = pod

    def candidates(self, namespace: str, names: Any) -> list[PodCandidate]:
        return [self.pod]

    def holds_runs(self, namespace: str, names: Any) -> bool:
        return self.pod.holds_runs

    def __getattr__(self, name: str) -> Any:
        return lambda *args: None  # note_dispatched, note_finished, ...


class Pod:
    """Accepts every run (busy for its first ``busy`` sends) and notes when each came."""

    def __init__(self, busy: int = 0) -> None:
        self.busy = busy
        self.received: list[tuple[datetime, DispatchRequest]] = []
        self.cancelled: list[str] = []

    async def send(self, base_url: str, token: str | None, req: DispatchRequest) -> DispatchResult:
        self.received.append((datetime.now(UTC), req))
        if self.busy:
            self.busy -= 1
            return DispatchResult(Outcome.BUSY, 429, {"error": "busy"}, "busy", POD.pod)
        return DispatchResult(Outcome.ACCEPTED, 202, {"state": "running"}, None, POD.pod)

    async def cancel(self, base_url: str, token: str | None, key: str) -> bool:
        self.cancelled.append(key)
        return True


def lifecycle_with(
    store: MemoryRunStore, pool: Pool, pod: Pod, plans: dict[TaskUid, TaskPlan] | None = None
) -> Lifecycle:
    """The leader's run half for one every-second Task; ``plans`` (if given) is its plan table
    (the Task's plan is put in unless it holds one already)."""
    plans = {} if plans is None else plans
    plans.setdefault(TASK, plan())
    return Lifecycle(
        store=store,
        epoch=store.epoch,
        plans=plans,
        pool=pool,  # type: ignore[arg-type]
        client=pod,  # type: ignore[arg-type]
        callback_base_url="http://127.0.0.1:1",
        metrics=Metrics(),
        on_change=lambda task, execution: None,
        lease_valid=lambda: True,
    )


@contextlib.asynccontextmanager
async def handed_over_ahead(
    store: MemoryRunStore, lifecycle: Lifecycle, seconds: float, send_in: float | None = None
) -> AsyncIterator[tuple[ExecutionId, datetime]]:
    """A run whose tick is ``seconds`` away, claimed and handed over now, as the scheduler
    does when the Task's pods hold runs (to be sent ``send_in`` seconds from now, with a send
    lead); the lifecycle's loop runs meanwhile."""
    store.mirror(TASK)
    await lifecycle.recover()
    now = datetime.now(UTC)
    tick = now + timedelta(seconds=seconds)
    new = NewRun(TASK, "ns", "ahead", tick, Origin.SCHEDULE, RunStatus.CLAIMED, 1)
    (run,) = (await store.claim([new])).runs
    assert run is not None
    looping = asyncio.create_task(lifecycle.run())
    try:
        send_at = None if send_in is None else now + timedelta(seconds=send_in)
        lifecycle.claimed(run, TASK, tick, "schedule", RunStatus.CLAIMED, now, send_at)
        yield ExecutionId(run), tick
    finally:
        looping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await looping


async def test_a_run_for_a_pod_that_holds_runs_is_sent_at_once_to_start_at_its_tick() -> None:
    store, pod = MemoryRunStore(), Pod()
    lifecycle = lifecycle_with(store, Pool(HOLDING), pod)
    assert lifecycle.sends_ahead(TASK)
    async with handed_over_ahead(store, lifecycle, seconds=2) as (run, tick):
        await until(lambda: store.runs[run].status is RunStatus.RUNNING, "the pod to take it")
        ((came, request),) = pod.received
        assert came < tick  # sent ahead: nothing waits for the tick in the leader
        assert request.start_at == tick
        assert request.to_json()["startAt"] == tick.strftime("%Y-%m-%dT%H:%M:%S.") + (
            f"{tick.microsecond // 1000:03d}Z"
        )
        # The attempt's time counts from the tick, on the pod and in the leader.
        assert request.deadline == tick + timedelta(seconds=TIMEOUT)
        assert store.runs[run].deadline_at == tick + timedelta(seconds=TIMEOUT)


async def test_with_a_send_lead_the_run_is_recorded_at_once_and_sent_at_its_send_time() -> None:
    store, pod = MemoryRunStore(), Pod()
    lifecycle = lifecycle_with(store, Pool(HOLDING), pod)
    async with handed_over_ahead(store, lifecycle, seconds=2, send_in=1) as (run, tick):
        send_at = tick - timedelta(seconds=1)
        # Recorded with its pod right away: the record's transaction is off the sends' path.
        await until(lambda: store.runs[run].status is RunStatus.DISPATCHED, "the record")
        assert store.runs[run].pod_name == HOLDING.pod and pod.received == []
        await until(lambda: store.runs[run].status is RunStatus.RUNNING, "the pod to take it")
        ((came, request),) = pod.received
        assert send_at <= came < tick
        assert request.start_at == tick


async def test_a_pod_that_does_not_hold_runs_gets_the_run_at_its_tick_without_start_at() -> None:
    store, pod = MemoryRunStore(), Pod()
    lifecycle = lifecycle_with(store, Pool(POD), pod)
    assert not lifecycle.sends_ahead(TASK)  # the scheduler hands it over at the tick
    # Handed over early all the same, it is not sent before the tick.
    async with handed_over_ahead(store, lifecycle, seconds=1) as (run, tick):
        await until(lambda: store.runs[run].status is RunStatus.RUNNING, "the tick's dispatch")
        ((came, request),) = pod.received
        assert came >= tick and request.start_at is None


async def test_a_pod_busy_ahead_of_the_tick_is_asked_again_at_the_tick() -> None:
    store, pod = MemoryRunStore(), Pod(busy=1)
    lifecycle = lifecycle_with(store, Pool(HOLDING), pod)
    async with handed_over_ahead(store, lifecycle, seconds=1) as (run, tick):
        await until(lambda: store.runs[run].status is RunStatus.RUNNING, "the second offer")
        (early, first), (late, second) = pod.received
        assert early < tick and first.start_at == tick  # busy now: it may have room then
        assert late >= tick and second.start_at is None
        assert first.execution_key == second.execution_key  # the same attempt
        assert store.runs[run].attempt == 1


def deleted(plans: dict[TaskUid, TaskPlan], lifecycle: Lifecycle) -> None:
    del plans[TASK]  # as the scheduler forgets a deleted Task
    lifecycle.task_gone(TASK)


def suspended(plans: dict[TaskUid, TaskPlan], lifecycle: Lifecycle) -> None:
    plans[TASK] = plan(suspend=True)  # as the scheduler reads the suspended Task
    lifecycle.task_suspended(TASK)


SUSPENDED = "the Task was suspended before the run started"
ENDINGS = [(deleted, "the Task was deleted"), (suspended, SUSPENDED)]


@pytest.mark.parametrize(("end", "why"), ENDINGS, ids=["deleted", "suspended"])
async def test_a_run_held_for_its_tick_is_withdrawn_when_its_task_goes_or_pauses(
    end: Callable[[dict[TaskUid, TaskPlan], Lifecycle], None], why: str
) -> None:
    store, pod, plans = MemoryRunStore(), Pod(), {}
    lifecycle = lifecycle_with(store, Pool(HOLDING), pod, plans)
    async with handed_over_ahead(store, lifecycle, seconds=3) as (run, tick):
        await until(lambda: store.runs[run].status is RunStatus.RUNNING, "the pod to hold it")
        end(plans, lifecycle)
        await until(lambda: store.runs[run].status is RunStatus.CANCELLED, "the run withdrawn")
        assert datetime.now(UTC) < tick  # before its pod would have started it
        assert pod.cancelled == [f"{run}-1"]
        assert store.runs[run].error == why


async def loop_turns(lifecycle: Lifecycle, turns: list[datetime], count: int) -> None:
    """Wake the lifecycle and wait until its loop has acted on its timers ``count`` more times
    (``turns`` lists each time it did) and every action they started has ended: whatever it
    was to do about a change made before, it has done."""
    seen = len(turns)
    lifecycle.wake()
    await until(lambda: len(turns) >= seen + count, f"{count} turns of the loop")
    await until(lambda: lifecycle._act.under_way == 0, "the actions they started")


@pytest.mark.parametrize(("end", "why"), ENDINGS, ids=["deleted", "suspended"])
async def test_a_run_already_started_is_left_to_finish_when_its_task_goes_or_pauses(
    end: Callable[[dict[TaskUid, TaskPlan], Lifecycle], None],
    why: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, pod, plans = MemoryRunStore(), Pod(), {}
    lifecycle = lifecycle_with(store, Pool(HOLDING), pod, plans)
    turns: list[datetime] = []
    act_on_timers = lifecycle._fire_timers

    def counted(now: datetime) -> None:
        act_on_timers(now)
        turns.append(now)

    monkeypatch.setattr(lifecycle, "_fire_timers", counted)
    async with handed_over_ahead(store, lifecycle, seconds=0.3) as (run, tick):
        await until(lambda: store.runs[run].status is RunStatus.RUNNING, "the pod to hold it")
        await until(lambda: datetime.now(UTC) > tick, "the tick")
        end(plans, lifecycle)
        await loop_turns(lifecycle, turns, 2)  # a withdrawal would have been made by now
        assert store.runs[run].status is RunStatus.RUNNING and pod.cancelled == []


async def test_a_scheduled_run_of_a_suspended_task_is_not_sent_at_its_tick() -> None:
    store, pod, plans = MemoryRunStore(), Pod(), {TASK: plan(suspend=True)}
    lifecycle = lifecycle_with(store, Pool(POD), pod, plans)  # a pod that gets runs at the tick
    async with handed_over_ahead(store, lifecycle, seconds=0.2) as (run, _):
        await until(lambda: store.runs[run].status is RunStatus.CANCELLED, "the run cancelled")
        assert pod.received == [] and pod.cancelled == []
        assert store.runs[run].error == SUSPENDED


def test_a_sidecar_says_in_its_health_answer_whether_it_holds_runs() -> None:
    def answer(**extra: Any) -> bool:
        body = {"status": "ok", "inFlight": 0, "capacity": 4, **extra}
        return probe_result(200, body, b"").holds_runs

    assert answer(protocol=3) and answer(protocol=4)
    assert not answer() and not answer(protocol=2)
    assert not answer(protocol="3") and not answer(protocol=True) and not answer(protocol=None)


@pytest.mark.parametrize(("end", "why"), ENDINGS, ids=["deleted", "suspended"])
async def test_a_run_waiting_for_its_send_time_is_cancelled_unsent_when_its_task_goes_or_pauses(
    end: Callable[[dict[TaskUid, TaskPlan], Lifecycle], None], why: str
) -> None:
    store, pod, plans = MemoryRunStore(), Pod(), {}
    lifecycle = lifecycle_with(store, Pool(HOLDING), pod, plans)
    async with handed_over_ahead(store, lifecycle, seconds=2, send_in=1) as (run, tick):
        await until(lambda: store.runs[run].status is RunStatus.DISPATCHED, "the record")
        end(plans, lifecycle)
        await until(lambda: store.runs[run].status is RunStatus.CANCELLED, "the run cancelled")
        assert datetime.now(UTC) < tick and store.runs[run].error == why
        # Never sent, so there was nothing to withdraw from the pod.
        assert pod.received == [] and pod.cancelled == []

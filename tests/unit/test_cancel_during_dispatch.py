"""A cancel that lands while the leader is sending the run: the canceller found no pod to tell
(or told a pod that did not have the run yet), so the leader tells the pod once its dispatch is
over. Driven over the in-memory store with a pod whose answer the test holds back, so the cancel
falls exactly between the recorded dispatch and the pod's acceptance."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from cadenza.core import runs as rules
from cadenza.core.ids import ExecutionId, TaskUid
from cadenza.core.transitions import RunStatus
from cadenza.dispatch.client import DispatchRequest, DispatchResult, Outcome
from cadenza.executors.members import PodCandidate
from cadenza.kube.views import TaskView
from cadenza.metrics import Metrics
from cadenza.scheduling.lifecycle import Lifecycle
from cadenza.scheduling.plans import plan_of
from cadenza.store.executions import Origin
from cadenza.store.memory import MemoryRunStore
from cadenza.store.port import NewRun
from tests.support.waiting import until

TASK = TaskUid("uid-cancelled")
POD = PodCandidate(
    executor="workers",
    executor_uid="executor-uid",
    pod="pod-a",
    pod_uid="pod-uid",
    ip="127.0.0.9",
    base_url="http://127.0.0.9:9090",
    healthy=True,
    in_flight=0,
    capacity=10,
    token="dispatch-token",
)


class OnePod:
    """The pool: one healthy pod, whatever is asked."""

    def candidates(self, namespace: str, names: Any) -> list[PodCandidate]:
        return [POD]

    def __getattr__(self, name: str) -> Any:
        return lambda *args: None  # note_dispatched, note_finished, ...


class HeldPod:
    """A pod that accepts every run, but only when the test lets the answer through."""

    def __init__(self) -> None:
        self.received = asyncio.Event()
        self.answer = asyncio.Event()
        self.cancels: list[tuple[str, str | None, str]] = []

    async def send(self, base_url: str, token: str | None, req: DispatchRequest) -> DispatchResult:
        self.received.set()
        await self.answer.wait()
        return DispatchResult(Outcome.ACCEPTED, 202, {"state": "running"}, None, POD.pod)

    async def cancel(self, base_url: str, token: str | None, key: str) -> bool:
        self.cancels.append((base_url, token, key))
        return True


def lifecycle_over(
    store: MemoryRunStore,
    pod: HeldPod | None,
    metrics: Metrics,
    grace: float = 10.0,
    on_change: Callable[[TaskUid, Any], None] = lambda task, execution: None,
    lease_valid: Callable[[], bool] = lambda: True,
) -> Lifecycle:
    """The leader's run half for one every-second Task, its pool one pod, ``pod`` its client."""
    spec = {"schedule": "* * * * * *", "executors": [{"name": "workers"}]}
    view = TaskView.of(str(TASK), "ns", "cancelled", 1, spec)
    return Lifecycle(
        store=store,
        epoch=store.epoch,
        plans={TASK: plan_of(view)},
        pool=OnePod(),  # type: ignore[arg-type]
        client=pod,  # type: ignore[arg-type]
        callback_base_url="http://127.0.0.1:1",
        metrics=metrics,
        on_change=on_change,
        lease_valid=lease_valid,
        deadline_grace_seconds=grace,
    )


@contextlib.asynccontextmanager
async def sent_run(
    store: MemoryRunStore, lifecycle: Lifecycle, max_attempts: int = 1
) -> AsyncIterator[ExecutionId]:
    """A run of the Task claimed now and handed to ``lifecycle``, whose loop runs meanwhile."""
    store.mirror(TASK)
    await lifecycle.recover()
    now = datetime.now(UTC)
    tick = NewRun(TASK, "ns", "cancelled", now, Origin.SCHEDULE, RunStatus.CLAIMED, max_attempts)
    (run,) = (await store.claim([tick])).runs
    assert run is not None
    looping = asyncio.create_task(lifecycle.run())
    try:
        lifecycle.claimed(run, TASK, now, "schedule", RunStatus.CLAIMED, now)
        yield ExecutionId(run)
    finally:
        looping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await looping


async def test_a_run_cancelled_while_it_was_sent_is_stopped_on_its_pod() -> None:
    store, pod = MemoryRunStore(), HeldPod()
    lifecycle = lifecycle_over(store, pod, Metrics())
    async with sent_run(store, lifecycle) as run:
        await asyncio.wait_for(pod.received.wait(), 10)
        assert store.runs[run].status is RunStatus.DISPATCHED

        # The API's cancel: a guarded transition and a note in the change log.
        cancelled = rules.Finish(rules.Outcome(RunStatus.CANCELLED, error="by the REST API"))
        assert await store.end_attempt(run, 1, cancelled)
        store.record_change(run)
        assert pod.cancels == []  # the run is still on its way: nothing to tell yet

        pod.answer.set()
        await until(lambda: pod.cancels, "the leader to tell the pod")
        assert pod.cancels == [(POD.base_url, POD.token, f"{run}-1")]
        await until(lambda: lifecycle.in_flight(TASK) == 0, "the run to leave the leader")
        assert store.runs[run].status is RunStatus.CANCELLED

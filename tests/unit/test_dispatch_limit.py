"""The leader's dispatches in flight are bounded (``CADENZA_MAX_DISPATCHES_IN_FLIGHT``): runs due
beyond the bound stay claimed and wait their turn, counted by ``cadenza_dispatches_waiting``,
and every one of them is sent once a place frees; none is lost or sent twice. Driven over the
in-memory store with a pod whose answers the test holds back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime

from cadenza.core.ids import ExecutionId
from cadenza.core.transitions import RunStatus
from cadenza.dispatch.client import DispatchRequest, DispatchResult, Outcome
from cadenza.kube.views import TaskView
from cadenza.metrics import Metrics
from cadenza.scheduling.lifecycle import Lifecycle
from cadenza.scheduling.plans import plan_of
from cadenza.store.executions import Origin
from cadenza.store.memory import MemoryRunStore
from cadenza.store.port import NewRun
from tests.unit.test_cancel_during_dispatch import POD, TASK, OnePod, until

RUNS = 6
LIMIT = 2


class SlowPod:
    """Accepts every run, one by one or in batches, once the test lets the answers through."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.keys: list[str] = []

    async def send(self, base_url: str, token: str | None, req: DispatchRequest) -> DispatchResult:
        return (await self.send_batch(base_url, token, [req]))[0]

    async def send_batch(
        self, base_url: str, token: str | None, requests: Sequence[DispatchRequest]
    ) -> list[DispatchResult]:
        self.keys.extend(r.execution_key for r in requests)
        await self.answer.wait()
        accepted = DispatchResult(Outcome.ACCEPTED, 202, {"state": "running"}, None, POD.pod)
        return [accepted] * len(requests)


def waiting(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("cadenza_dispatches_waiting")


async def test_runs_beyond_the_bound_wait_claimed_and_all_go_once_places_free() -> None:
    store, pod, metrics = MemoryRunStore(), SlowPod(), Metrics()
    spec = {"schedule": "* * * * * *", "executors": [{"name": "workers"}]}
    lifecycle = Lifecycle(
        store=store,
        epoch=store.epoch,
        plans={TASK: plan_of(TaskView.of(str(TASK), "ns", "many", 1, spec))},
        pool=OnePod(),  # type: ignore[arg-type]
        client=pod,  # type: ignore[arg-type]
        callback_base_url="http://127.0.0.1:1",
        metrics=metrics,
        on_change=lambda task, execution: None,
        lease_valid=lambda: True,
        max_dispatches=LIMIT,
    )
    store.mirror(TASK)
    await lifecycle.recover()
    now = datetime.now(UTC)
    new = [
        NewRun(TASK, "ns", "many", None, Origin.MANUAL, RunStatus.CLAIMED, 1, f"k{n}")
        for n in range(RUNS)
    ]
    runs = [ExecutionId(r) for r in (await store.claim(new)).runs if r is not None]
    assert len(runs) == RUNS
    looping = asyncio.create_task(lifecycle.run())
    try:
        for run in runs:
            lifecycle.claimed(run, TASK, None, "manual", RunStatus.CLAIMED, now)
        await until(lambda: len(pod.keys) == LIMIT, "the first runs to reach the pod")
        await until(lambda: waiting(metrics) == RUNS - LIMIT, "the gauge to count the others")
        statuses = [store.runs[r].status for r in runs]
        assert statuses.count(RunStatus.DISPATCHED) == LIMIT
        assert statuses.count(RunStatus.CLAIMED) == RUNS - LIMIT  # recorded nowhere yet

        pod.answer.set()
        await until(
            lambda: all(store.runs[r].status is RunStatus.RUNNING for r in runs), "every run"
        )
        assert sorted(pod.keys) == sorted(f"{r}-1" for r in runs)  # each sent once
        await until(lambda: waiting(metrics) == 0, "the gauge to follow")
    finally:
        looping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await looping
    assert waiting(metrics) == 0

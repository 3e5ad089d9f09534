"""A run an earlier leader recorded as sent to a pod and died before sending: the pod does not
know it, so the new leader sends the same attempt there again, under the same execution key,
instead of counting it lost. A run the pod had accepted and no longer knows is lost. Driven over
the in-memory store with a pod that answers from what it was really sent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from cadenza.core.ids import ExecutionId
from cadenza.core.transitions import RunStatus
from cadenza.dispatch.client import DispatchRequest, DispatchResult, Outcome
from cadenza.metrics import Metrics
from cadenza.store.executions import Origin
from cadenza.store.memory import MemoryRunStore
from cadenza.store.port import Balance, Begin, NewRun
from cadenza.store.runs import Dispatch
from tests.unit.test_cancel_during_dispatch import POD, TASK, lifecycle_over, until


class ForgetfulPod:
    """A pod that knows only the runs it was really sent; busy for its first ``busy`` sends."""

    def __init__(self, busy: int = 0) -> None:
        self.busy = busy
        self.sent: list[str] = []
        self.refused = 0

    async def view(self, base_url: str, token: str | None, key: str) -> dict[str, Any] | None:
        return {"executionId": key, "state": "running"} if key in self.sent else {}

    async def send(self, base_url: str, token: str | None, req: DispatchRequest) -> DispatchResult:
        if self.busy:
            self.busy -= 1
            self.refused += 1
            return DispatchResult(Outcome.BUSY, 429, {"error": "busy"}, "busy", POD.pod)
        self.sent.append(req.execution_key)
        return DispatchResult(Outcome.ACCEPTED, 202, {"state": "running"}, None, POD.pod)

    async def cancel(self, base_url: str, token: str | None, key: str) -> bool:
        return True


@contextlib.asynccontextmanager
async def taken_over(
    store: MemoryRunStore,
    pod: ForgetfulPod,
    *,
    accepted: bool,
    seconds: float = 30,
    grace: float = 10.0,
) -> AsyncIterator[ExecutionId]:
    """A run the dead leader pointed at ``POD`` (and, if ``accepted``, saw it accept), taken
    over by a new leader whose loop runs meanwhile."""
    store.mirror(TASK)
    now = datetime.now(UTC)
    tick = NewRun(TASK, "ns", "cancelled", now, Origin.SCHEDULE, RunStatus.CLAIMED, 1)
    (run,) = (await store.claim([tick])).runs
    assert run is not None
    to = Dispatch("workers", POD.pod, POD.ip, "h" * 64, now + timedelta(seconds=seconds))
    cursor = Balance(TASK, "RoundRobin", {"last": POD.pod})  # what the dead leader's pick left
    assert await store.begin_dispatch(Begin(run, 1, to, cursor))
    if accepted:
        assert await store.confirm(run, 1)
    lifecycle = lifecycle_over(store, pod, Metrics(), grace)  # type: ignore[arg-type]
    await lifecycle.recover()
    looping = asyncio.create_task(lifecycle.run())
    try:
        yield ExecutionId(run)
    finally:
        looping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await looping


async def test_a_run_recorded_but_never_sent_is_sent_again_under_the_same_key() -> None:
    store, pod = MemoryRunStore(), ForgetfulPod()
    async with taken_over(store, pod, accepted=False) as run:
        await until(lambda: store.runs[run].status is RunStatus.RUNNING, "the pod to take it")
        assert pod.sent == [f"{run}-1"]  # the same attempt, to the same pod
        row = store.runs[run]
        assert (row.attempt, row.pod_name) == (1, POD.pod)


async def test_sending_a_run_again_keeps_the_load_balancer_cursor_the_dead_leader_saved() -> None:
    """The new leader has no cursor of its own yet when it sends the run again: the one saved
    with the dead leader's last pick stays, so its next pick continues the cycle (an empty state
    saved here made a round robin start again from its first pod)."""
    store, pod = MemoryRunStore(), ForgetfulPod()
    async with taken_over(store, pod, accepted=False) as run:
        await until(lambda: store.runs[run].status is RunStatus.RUNNING, "the pod to take it")
        assert await store.balance_state(TASK, "RoundRobin") == {"last": POD.pod}


async def test_a_busy_pod_keeps_the_run_and_is_asked_again() -> None:
    store, pod = MemoryRunStore(), ForgetfulPod(busy=1)
    async with taken_over(store, pod, accepted=False) as run:
        await until(lambda: store.runs[run].status is RunStatus.RUNNING, "the second try")
        assert pod.sent == [f"{run}-1"] and pod.busy == 0
        assert store.runs[run].pod_name == POD.pod


async def test_a_run_the_pod_accepted_and_no_longer_knows_is_lost() -> None:
    store, pod = MemoryRunStore(), ForgetfulPod()
    async with taken_over(store, pod, accepted=True) as run:
        await until(lambda: store.runs[run].status is RunStatus.LOST, "the run counted lost")
        assert pod.sent == []
        assert store.runs[run].error == f"pod {POD.pod} does not know the run"


async def test_a_pod_that_keeps_refusing_does_not_keep_the_run_past_its_deadline() -> None:
    store, pod = MemoryRunStore(), ForgetfulPod(busy=10**6)
    async with taken_over(store, pod, accepted=False, seconds=1, grace=0.5) as run:
        await until(lambda: store.runs[run].status is RunStatus.LOST, "the deadline to end it")
        assert pod.sent == [] and 1 <= pod.refused <= 2  # asked every 2 s until then

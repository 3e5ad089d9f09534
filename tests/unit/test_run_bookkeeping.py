"""The leader's bookkeeping parts on their own: the timer heap, the table of open runs, and the
group commit that batches store writes and dispatches."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from cadenza.batching import Coalescer
from cadenza.core.ids import ExecutionId, TaskUid
from cadenza.core.transitions import RunStatus
from cadenza.scheduling.openruns import OpenRuns, Run
from cadenza.scheduling.timers import Kind, Timers

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
A, B, C = ExecutionId(1), ExecutionId(2), ExecutionId(3)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_timers_come_in_order_and_each_once() -> None:
    timers = Timers()
    timers.set(A, Kind.OVERDUE, at(3))
    timers.set(B, Kind.RETRY, at(1))
    timers.set(C, Kind.CHECK, at(2))
    assert timers.next_at() == at(1)
    assert timers.due(at(2)) == [(B, Kind.RETRY), (C, Kind.CHECK)]
    assert timers.due(at(2)) == []
    assert timers.due(at(10)) == [(A, Kind.OVERDUE)]
    assert timers.next_at() is None and len(timers) == 0


def test_setting_a_timer_again_replaces_it_and_clearing_drops_a_runs_timers() -> None:
    timers = Timers()
    timers.set(A, Kind.OVERDUE, at(1))
    timers.set(A, Kind.OVERDUE, at(5))
    timers.set(A, Kind.CHECK, at(2))
    timers.set(B, Kind.RETRY, at(3))
    assert timers.due(at(4)) == [(A, Kind.CHECK), (B, Kind.RETRY)]
    timers.clear(A)
    assert timers.due(at(10)) == [] and timers.next_at() is None


def run(id_: int, task: str, status: RunStatus, **kw: object) -> Run:
    return Run(ExecutionId(id_), TaskUid(task), 1, status, None, T0, "schedule", **kw)  # type: ignore[arg-type]


def test_open_runs_count_per_task() -> None:
    runs = OpenRuns()
    runs.add(run(1, "a", RunStatus.RUNNING))
    runs.add(run(2, "a", RunStatus.QUEUED))
    runs.add(run(3, "a", RunStatus.QUEUED, next_attempt_at=at(5)))
    runs.add(run(4, "b", RunStatus.CLAIMED))
    assert (runs.in_flight(TaskUid("a")), runs.queued(TaskUid("a"))) == (1, 2)
    # Only runs waiting in the queue (not for a retry's backoff) are released by the mode.
    assert [r.id for r in runs.in_queue(TaskUid("a"))] == [2]
    assert runs.totals() == (2, 2)
    found = runs.get(ExecutionId(2))
    assert found is not None
    found.busy = True  # on its way to a pod: holds a slot, no longer in the queue
    assert runs.slots_taken(TaskUid("a")) == 2 and runs.in_queue(TaskUid("a")) == []
    assert runs.remove(ExecutionId(4)) is not None and runs.remove(ExecutionId(4)) is None
    assert runs.in_flight(TaskUid("b")) == 0 and len(runs) == 3


async def test_calls_that_come_during_a_batch_go_together_next() -> None:
    batches: list[list[int]] = []
    started, release = asyncio.Event(), asyncio.Event()

    async def handle(items: list[int]) -> list[int]:
        batches.append(items)
        started.set()
        await release.wait()
        return [i * 10 for i in items]

    coalesce: Coalescer[int, int] = Coalescer(handle, max_batch=3)
    calls = [asyncio.create_task(coalesce(0))]
    await started.wait()
    calls += [asyncio.create_task(coalesce(i)) for i in range(1, 6)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*calls) == [0, 10, 20, 30, 40, 50]
    # The first went alone at once; the rest piled up behind it, at most three a batch.
    assert batches == [[0], [1, 2, 3], [4, 5]]


async def test_a_failed_batch_fails_each_of_its_calls_and_only_them() -> None:
    async def handle(items: list[int]) -> list[int]:
        if 0 in items:
            raise RuntimeError("boom")
        return items

    coalesce: Coalescer[int, int] = Coalescer(handle, max_batch=1)
    first, second = asyncio.create_task(coalesce(0)), asyncio.create_task(coalesce(1))
    with pytest.raises(RuntimeError, match="boom"):
        await first
    assert await second == 1

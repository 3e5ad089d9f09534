"""The leader's per-run actions: one at a time per run, and none started once the leader's work
has stopped (a claim still in flight then must not start a dispatch on a closing store)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from cadenza.core.ids import ExecutionId, TaskUid
from cadenza.core.transitions import RunStatus
from cadenza.scheduling.openruns import Actions, Run

NOW = datetime(2026, 12, 3, tzinfo=UTC)


def run() -> Run:
    return Run(ExecutionId(1), TaskUid("t"), 1, RunStatus.CLAIMED, NOW, NOW, "schedule")


async def test_an_action_marks_its_run_busy_until_it_ends() -> None:
    acts, done = Actions(), asyncio.Event()
    the_run = run()

    async def action() -> None:
        await done.wait()

    acts(the_run, action())
    assert the_run.busy
    done.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert not the_run.busy


async def test_nothing_starts_once_stopped() -> None:
    acts, started = Actions(), []

    async def action() -> None:
        started.append(True)

    acts.cancel_all()
    the_run = run()
    acts(the_run, action())  # closed, not left un-awaited
    for _ in range(10):
        await asyncio.sleep(0)
    assert started == [] and not the_run.busy


async def test_beyond_the_limit_actions_wait_their_turn_in_order() -> None:
    acts, release = Actions(limit=2), asyncio.Event()
    started: list[int] = []

    async def action(n: int) -> None:
        started.append(n)
        await release.wait()

    runs = [run() for _ in range(5)]
    for n, each in enumerate(runs):
        acts(each, action(n))
    for _ in range(10):
        await asyncio.sleep(0)
    assert started == [0, 1] and acts.waiting == 3
    assert all(each.busy for each in runs)  # waiting counts as being done: nothing else starts
    release.set()
    for _ in range(20):
        await asyncio.sleep(0)
    assert started == [0, 1, 2, 3, 4] and acts.waiting == 0
    assert not any(each.busy for each in runs)


async def test_a_failed_action_frees_its_place() -> None:
    acts, started = Actions(limit=1), []

    async def failing() -> None:
        raise RuntimeError("the pod went away")

    async def action() -> None:
        started.append(True)

    acts(run(), failing())
    acts(run(), action())
    for _ in range(10):
        await asyncio.sleep(0)
    assert started == [True] and acts.waiting == 0


async def test_stopping_closes_the_waiting_actions() -> None:
    acts, hold = Actions(limit=1), asyncio.Event()
    started: list[int] = []

    async def action(n: int) -> None:
        started.append(n)
        await hold.wait()

    first, second = run(), run()
    acts(first, action(1))
    acts(second, action(2))
    await asyncio.sleep(0)
    acts.cancel_all()  # the waiting one is closed, not left un-awaited
    for _ in range(10):
        await asyncio.sleep(0)
    assert started == [1] and acts.waiting == 0 and not second.busy

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

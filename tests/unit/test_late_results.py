"""The leader's loop over the in-memory store, with what it does outside its runs' lives.

A result that reaches a run after the leader let go of it (a lost run corrected by its pod's
late report): the change log names the run, and the Task's status must be written again to tell
the new outcome (else a Task that fires once a day shows the guess until the next day). And
while the lease is in doubt, the loop waits between looks instead of spinning."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from datetime import UTC, datetime, timedelta

from cadenza.core import runs as rules
from cadenza.core.ids import TaskUid
from cadenza.core.transitions import RunStatus
from cadenza.metrics import Metrics
from cadenza.scheduling.lifecycle import CHANGES_SECONDS
from cadenza.store.executions import Origin
from cadenza.store.memory import MemoryRunStore
from cadenza.store.port import Begin, NewRun
from cadenza.store.runs import Dispatch
from tests.unit.test_cancel_during_dispatch import TASK, lifecycle_over, until


async def test_a_late_result_for_a_run_the_leader_let_go_of_touches_its_task() -> None:
    store, touched = MemoryRunStore(), []
    lifecycle = lifecycle_over(
        store, None, Metrics(), on_change=lambda task, execution: touched.append(task)
    )
    store.mirror(TASK)
    await lifecycle.recover()
    now = datetime.now(UTC)
    tick = NewRun(TASK, "ns", "cancelled", now, Origin.SCHEDULE, RunStatus.CLAIMED, 1)
    (run,) = (await store.claim([tick])).runs
    assert run is not None
    to = Dispatch("workers", "pod-a", None, "h" * 64, now + timedelta(seconds=5))
    assert await store.begin_dispatch(Begin(run, 1, to))
    # Given up by an earlier pass of the leader, which forgot it then.
    lost = rules.Finish(rules.Outcome(RunStatus.LOST, error="no answer"))
    assert await store.end_attempt(run, 1, lost)

    looping = asyncio.create_task(lifecycle.run())
    try:
        # The pod's late report, applied by a replica's callback API: the row is corrected
        # and the change log names the run.
        store.runs[run] = dataclasses.replace(store.runs[run], status=RunStatus.SUCCEEDED)
        store.record_change(run)
        await until(lambda: touched, "the Task's status to be asked for")
        assert touched == [TaskUid(TASK)]
        assert lifecycle.in_flight(TASK) == 0  # still not one of the leader's open runs
    finally:
        looping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await looping


async def test_while_the_lease_is_in_doubt_the_loop_waits_instead_of_spinning() -> None:
    """Nothing is done without a valid lease; the loop looks again after a pause (the third
    look cannot come before two pauses), not in a tight loop that would take a core."""
    looks: list[float] = []

    def in_doubt() -> bool:
        looks.append(time.monotonic())
        return False

    store = MemoryRunStore()
    lifecycle = lifecycle_over(store, None, Metrics(), lease_valid=in_doubt)
    store.mirror(TASK)
    await lifecycle.recover()
    looping = asyncio.create_task(lifecycle.run())
    try:
        await until(lambda: len(looks) >= 3, "three looks at the lease")
        assert looks[2] - looks[0] >= 2 * CHANGES_SECONDS
    finally:
        looping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await looping

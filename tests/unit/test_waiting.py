"""Waiting with a time limit: the value, None on time-out, and a cancellation never lost even
when it comes in the same turn as the wake-up (which ``asyncio.wait_for`` loses on 3.11)."""

from __future__ import annotations

import asyncio

from cadenza.waiting import at_most, woken


async def test_the_value_or_none_once_the_time_is_up() -> None:
    async def answer() -> int:
        return 42

    assert await at_most(1, answer()) == 42
    assert await at_most(0.01, asyncio.sleep(5)) is None
    event = asyncio.Event()
    assert await woken(event, 0.01) is False
    event.set()
    assert await woken(event, 5) is True


async def test_a_loop_cancelled_as_it_is_woken_stops() -> None:
    for _ in range(200):
        event = asyncio.Event()

        async def loop(wake: asyncio.Event = event) -> None:
            while True:
                await woken(wake, 5)
                wake.clear()

        task = asyncio.create_task(loop())
        await asyncio.sleep(0)  # the loop waits now
        event.set()
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2)
        assert done == {task} and task.cancelled()

"""Helpers shared by the test suites: waiting on conditions with deadlines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll ``condition`` until it returns a truthy value and return it; fail at the deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


async def async_wait_for(
    condition: Callable[[], Awaitable[T]], within: float = 30.0, what: str = "condition"
) -> T:
    """The asyncio twin of :func:`wait_for`; ``within`` is the deadline in seconds."""
    deadline = time.monotonic() + within
    delay = 0.02
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)

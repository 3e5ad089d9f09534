"""Waiting with a time limit that never loses a cancellation.

On Python 3.11, ``asyncio.wait_for`` runs what it waits for as a task of its own, and when that
finishes in the same turn of the loop as the waiter is cancelled, it returns the result and the
cancellation is lost (python/cpython#86296, fixed in 3.12). A loop that waits for a wake-up
event that way can then not be stopped: a leader stepping down would keep its scheduler running.
``asyncio.timeout`` awaits in the waiter's own task, so a cancellation always arrives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def at_most(seconds: float, waiting: Awaitable[T]) -> T | None:
    """What ``waiting`` gives, or None once ``seconds`` passed first."""
    try:
        async with asyncio.timeout(seconds):
            return await waiting
    except TimeoutError:
        return None


async def woken(event: asyncio.Event, seconds: float) -> bool:
    """Until ``event`` is set or ``seconds`` pass: whether it was set."""
    return await at_most(seconds, event.wait()) is not None

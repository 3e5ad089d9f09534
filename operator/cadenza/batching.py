"""Group commit for the event loop: calls that come while a batch is in flight go together next.

The first call goes at once, so a lone call waits for no timer; under load the calls that pile
up behind a batch in flight form the next one, so the number of round trips follows the round
trip time, not the number of calls. Used for the leader's store transactions and for dispatches
to one pod.

Invariants:
- Every call gets the result at its own position in its batch, or the batch's exception.
- Calls are handled in arrival order, at most ``max_batch`` at a time, one batch at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741


class Coalescer(Generic[I, O]):
    def __init__(self, handle: Callable[[list[I]], Awaitable[list[O]]], max_batch: int) -> None:
        self._handle = handle
        self._max_batch = max_batch
        self._waiting: list[tuple[I, asyncio.Future[O]]] = []
        self._draining: asyncio.Task[None] | None = None

    async def __call__(self, item: I) -> O:
        future: asyncio.Future[O] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._max_batch]
                self._waiting = self._waiting[self._max_batch :]
                try:
                    results = await self._handle([item for item, _ in batch])
                except asyncio.CancelledError:
                    for _, future in batch:
                        future.cancel()
                    raise
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._draining = None

    def close(self) -> None:
        """Cancel the calls still waiting (the batch in flight finishes)."""
        for _, future in self._waiting:
            future.cancel()
        self._waiting.clear()

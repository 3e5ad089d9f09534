"""The leader's pool re-reads Executors and pods when one of them changes, and not for a Task
change: those are most changes (every status write comes back as one)."""

from __future__ import annotations

import asyncio
import contextlib

from cadenza.kube.hub import Hub
from cadenza.leader import _forward_changes


class Pool:
    def __init__(self) -> None:
        self.told = 0

    def changed(self) -> None:
        self.told += 1


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_only_executor_and_pod_changes_reach_the_pool() -> None:
    hub, pool = Hub(), Pool()
    forwarding = asyncio.create_task(_forward_changes(hub, pool))  # type: ignore[arg-type]
    try:
        await settle()
        hub.notify("task", "ns", "a")
        hub.notify("task", "ns", "b")
        await settle()
        assert pool.told == 0
        hub.notify("pod", "ns", "worker-0")
        await settle()
        assert pool.told == 1
        hub.notify("task", "ns", "a")
        hub.notify("executor", "ns", "workers")
        await settle()
        assert pool.told == 2
    finally:
        forwarding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await forwarding
    assert hub.subscribers == []

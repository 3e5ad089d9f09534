"""The change feed over the in-memory store: a callback applied here is read at once, one
applied by another replica within a poll period, a run busy at the moment is named again later,
and wakes for other reasons (claims, timers, finished runs) do not read the log again."""

from __future__ import annotations

from collections.abc import Sequence

from cadenza.core.ids import ExecutionId
from cadenza.scheduling.changefeed import ChangeFeed
from cadenza.store.memory import MemoryRunStore


class CountingStore(MemoryRunStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def changes_since(
        self, after: int, gaps: Sequence[int], limit: int
    ) -> list[tuple[int, ExecutionId]]:
        self.reads += 1
        return await super().changes_since(after, gaps, limit)


async def test_the_log_is_read_when_a_run_is_named_here_or_a_poll_is_due() -> None:
    store = CountingStore()
    feed = ChangeFeed(store, poll_seconds=3600)
    await feed.start()
    assert await feed.read(lambda run: True) == []  # the first read is due at once
    assert store.reads == 1

    # Another replica's callback: not read before the poll is due.
    elsewhere = ExecutionId(7)
    store.record_change(elsewhere)
    assert not feed.due() and feed.seconds_to_poll() > 3000
    assert await feed.read(lambda run: True) == []
    assert store.reads == 1

    # A callback here names its run: read at once, with what the log holds meanwhile.
    here = ExecutionId(8)
    store.record_change(here)
    feed.mark(here)
    assert sorted(await feed.read(lambda run: True)) == [elsewhere, here]
    assert store.reads == 2
    assert await feed.read(lambda run: True) == []
    assert store.reads == 2


async def test_a_busy_run_is_named_again_once_it_is_ready() -> None:
    store = CountingStore()
    feed = ChangeFeed(store, poll_seconds=0)
    await feed.start()
    run = ExecutionId(3)
    store.record_change(run)
    assert await feed.read(lambda r: False) == []
    assert feed.due()  # kept for a later read
    assert await feed.read(lambda r: True) == [run]
    assert await feed.read(lambda r: True) == []

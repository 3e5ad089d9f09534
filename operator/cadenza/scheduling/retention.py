"""History retention: each Task's finished runs beyond ``spec.history`` are pruned in batches.

A round asks the store once for every Task: the store finds the few Tasks with something to prune
in a few reads and visits only those, several to a transaction. Small batches in short
transactions keep the leader's other writes flowing; a Task with a large backlog is simply
visited again on the next round. Pruning goes through the store's bookkeeping lane, so it never
delays a claim or a dispatch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from cadenza.core.ids import TaskUid
from cadenza.scheduling.plans import TaskPlan
from cadenza.store.port import HistoryLimit, RunStore

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 60.0


async def prune_forever(
    store: RunStore,
    plans: Mapping[TaskUid, TaskPlan],
    lease_valid: Callable[[], bool],
    interval: float = INTERVAL_SECONDS,
) -> None:
    while True:
        await asyncio.sleep(interval)
        if lease_valid():
            await prune_once(store, list(plans.values()))


async def prune_once(store: RunStore, plans: list[TaskPlan]) -> int:
    pruned = await store.prune(
        [HistoryLimit(p.uid, p.history_max_age_seconds, p.history_max_runs) for p in plans]
    )
    if pruned:
        log.info("pruned %d finished runs beyond the Tasks' history limits", pruned)
    return pruned

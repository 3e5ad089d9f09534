"""History retention: each Task's finished runs beyond ``spec.history`` are pruned in batches.

Small batches in short transactions keep the leader's other writes flowing; a Task with a large
backlog is simply visited again on the next round.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from sqlalchemy.engine import Engine

from cadenza.core.ids import Epoch, TaskUid
from cadenza.scheduling.plans import TaskPlan
from cadenza.store import fencing
from cadenza.store import runs as store_runs

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 60.0
BATCH = 1000


async def prune_forever(
    engine: Engine,
    lock_name: str,
    epoch: Epoch,
    plans: Mapping[TaskUid, TaskPlan],
    lease_valid: Callable[[], bool],
    interval: float = INTERVAL_SECONDS,
) -> None:
    while True:
        await asyncio.sleep(interval)
        if lease_valid():
            await prune_once(engine, lock_name, epoch, list(plans.values()))


async def prune_once(
    engine: Engine, lock_name: str, epoch: Epoch, plans: list[TaskPlan], batch: int = BATCH
) -> int:
    pruned = 0
    for plan in plans:

        def prune(plan: TaskPlan = plan) -> int:
            with fencing.leader_transaction(engine, lock_name, epoch) as conn:
                return store_runs.prune(
                    conn, plan.uid, plan.history_max_age_seconds, plan.history_max_runs, batch
                )

        pruned += await asyncio.to_thread(prune)
    if pruned:
        log.info("pruned %d finished runs beyond the Tasks' history limits", pruned)
    return pruned

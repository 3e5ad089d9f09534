"""Everything a replica does while it leads with one epoch, started in order and stopped together.

Order matters: the mirror resyncs first (the scheduler's rows need their Task rows), the pool
probes the pods once before the first tick (a new leader would otherwise find no healthy pod),
open runs of earlier epochs are taken over, and only then does the scheduler tick. If any part
fails, all stop: the replica steps down and another may lead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from cadenza import tls
from cadenza.core.ids import Epoch, TaskUid
from cadenza.dispatch.client import DispatchClient
from cadenza.executors import gauges
from cadenza.executors.pool import ExecutorPool
from cadenza.executors.status import ExecutorStatusWriter
from cadenza.executors.tokens import TokenSource
from cadenza.kube import objects
from cadenza.kube.hub import Hub
from cadenza.metrics import Metrics
from cadenza.mirror import MirrorLoop
from cadenza.mirror_snapshot import TaskConditions
from cadenza.scheduling import retention
from cadenza.scheduling.lifecycle import Lifecycle
from cadenza.scheduling.plans import TaskPlan
from cadenza.scheduling.scheduler import Scheduler
from cadenza.scheduling.status import TaskStatusBook
from cadenza.settings import Settings
from cadenza.store.leader_store import LeaderStore
from cadenza.waiting import at_most

log = logging.getLogger(__name__)

FIRST_PROBES_SECONDS = 5.0
"""How long a new leader waits for the pods' first probes before it starts ticking anyway."""


@dataclass
class LeaderContext:
    settings: Settings
    engine: Engine
    hub: Hub
    kube: objects.ApiClient
    metrics: Metrics
    lease_valid: Callable[[], bool]
    fire_engine: Engine | None = None
    """The pool of the store's fire lane (claims, dispatch records); None: ``engine``'s."""


class Leader:
    """The leader's work for one epoch; :attr:`lifecycle` is set once runs are handled."""

    def __init__(self, ctx: LeaderContext, epoch: Epoch) -> None:
        self.ctx = ctx
        self.epoch = epoch
        self.lifecycle: Lifecycle | None = None

    async def run(self) -> None:
        ctx, epoch = self.ctx, self.epoch
        lock = ctx.settings.leadership.lock_name
        # Read at every term, so a rotated CA bundle is trusted from the next leader on.
        trust = await asyncio.to_thread(tls.client_context, ctx.settings.dispatch.ca_file)
        client = DispatchClient(ssl_context=trust)
        store = LeaderStore(ctx.engine, lock, epoch, ctx.metrics, fire_engine=ctx.fire_engine)
        plans: dict[TaskUid, TaskPlan] = {}
        tuning = ctx.settings.scheduling
        book = TaskStatusBook(
            ctx.kube,
            ctx.engine,
            ctx.metrics,
            min_interval=tuning.status_min_interval_seconds,
            max_per_second=tuning.status_max_writes_per_second,
            max_spec_per_second=tuning.status_max_spec_writes_per_second,
            seeds=lambda namespace, name: (
                view.status_seed if (view := ctx.hub.task(namespace, name)) else None
            ),
        )
        pool = ExecutorPool(
            lambda: (ctx.hub.executors(), ctx.hub.pods()),
            client,
            TokenSource(ctx.kube, grace_seconds=tuning.dispatch_token_grace_seconds),
            engine=ctx.engine,
            lock_name=lock,
            epoch=epoch,
        )

        def conditions(uid: TaskUid, wanted: TaskConditions) -> None:
            book.conditions(
                uid, wanted.namespace, wanted.name, wanted.generation, wanted.conditions
            )

        scheduler: Scheduler | None = None

        def written(tasks: list[TaskUid]) -> None:
            if scheduler is not None:
                scheduler.mirrored(tasks)

        mirror = MirrorLoop(ctx.hub, ctx.engine, ctx.settings, epoch, conditions, written)
        lifecycle = Lifecycle(
            store=store,
            epoch=epoch,
            plans=plans,
            pool=pool,
            client=client,
            callback_base_url=ctx.settings.http.advertise_url,
            metrics=ctx.metrics,
            on_change=lambda uid, _row: book.run_changed(uid),
            lease_valid=ctx.lease_valid,
            deadline_grace_seconds=tuning.deadline_grace_seconds,
            max_dispatches=tuning.max_dispatches_in_flight,
        )
        scheduler = Scheduler(
            hub=ctx.hub,
            store=store,
            lifecycle=lifecycle,
            plans=plans,
            metrics=ctx.metrics,
            on_schedule=book.schedule,
            on_misfire=book.misfired,
            on_gone=book.gone,
            claim_ahead=tuning.claim_ahead_seconds,
            send_ahead=tuning.send_ahead_seconds,
            claim_ahead_max=tuning.claim_ahead_max_seconds,
        )
        executor_status = ExecutorStatusWriter(ctx.kube, ctx.lease_valid)
        try:
            async with asyncio.TaskGroup() as group:
                synced = asyncio.Event()
                group.create_task(mirror.run(ctx.lease_valid, synced), name="mirror")
                await synced.wait()
                group.create_task(pool.run(), name="pool")
                group.create_task(_forward_changes(ctx.hub, pool), name="pool-changes")
                group.create_task(executor_status.run(pool), name="executor-status")
                group.create_task(gauges.publish(pool, ctx.metrics), name="executor-gauges")
                await at_most(FIRST_PROBES_SECONDS, _first_probes(pool))
                scheduler.load()
                await lifecycle.recover()
                self.lifecycle = lifecycle
                group.create_task(lifecycle.run(), name="lifecycle")
                group.create_task(scheduler.run(), name="scheduler")
                group.create_task(book.run(ctx.lease_valid, scheduler.crowded), name="task-status")
                group.create_task(
                    retention.prune_forever(
                        store,
                        plans,
                        ctx.lease_valid,
                        tuning.retention_interval_seconds,
                    ),
                    name="retention",
                )
                log.info("leading with epoch %s: %d tasks scheduled", epoch, len(plans))
        finally:
            self.lifecycle = None
            await client.close()
            await store.close()


async def _first_probes(pool: ExecutorPool) -> None:
    """Until every addressable pod has been probed once. The pool's first update is only its
    first read of the pods, before any probe answered: waiting for that alone let a new leader
    send its first runs (taken over, misfired) while it still knew no healthy pod."""
    seen = -1
    while not all(executor.settled for executor in pool.snapshot()):
        seen = await pool.wait_updated(seen)


async def _forward_changes(hub: Hub, pool: ExecutorPool) -> None:
    # Not Tasks: the pool re-reads every Executor spec and pod when told, and a status write
    # comes back as a Task event (with 10,000 Tasks applied, 9 % of the leader's CPU).
    changed = hub.subscribe("executor", "pod")
    try:
        while True:
            await changed.wait()
            changed.take()
            pool.changed()
    finally:
        hub.unsubscribe(changed)

"""The leader's store work for the runs of one tick, measured alone against the local MariaDB.

    .venv/bin/python bench/fire_lane.py [--tasks 1000] [--ticks 10]

Mirrors ``--tasks`` Tasks into a scratch database, then for each of ``--ticks`` ticks does what
the leader's store does for every Task firing in it, through :class:`LeaderStore` as the leader
calls it: claims the tick's runs in one call, records where each goes (a ``begin_dispatch`` per
run with its balancer state, coalesced into batches as at run time) and confirms each. Prints
one JSON document with the milliseconds of this process's CPU (user + system) and of wall
time per tick for each step, averaged over the ticks after the first (which warms the
connections and statement caches). The database's own CPU is not in it (MariaDB runs apart).

The whole system's figures come from ``bench/run.py``; this one shows what the fire lane's
statements cost the leader's interpreter without the rest of the machine competing for it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import system
from cadenza import mirror_snapshot
from cadenza.core.ids import ExecutionId, TaskUid
from cadenza.core.transitions import RunStatus
from cadenza.kube.views import TaskView
from cadenza.store import engine as store_engine
from cadenza.store import fencing, mirror
from cadenza.store.executions import Origin
from cadenza.store.leader_store import LeaderStore
from cadenza.store.mirror_rows import TaskRow
from cadenza.store.port import Balance, Begin, NewRun
from cadenza.store.runs import Dispatch
from retention import LOCK, cpu_seconds, scratch_leader

T = TypeVar("T")
PODS = 3
TIMEOUT = timedelta(seconds=30)
"""The deadline a dispatch record carries (the Tasks' default timeout)."""


def task_row(index: int) -> TaskRow:
    """The mirror row of the benchmark's Task ``index``, as the operator writes it."""
    body = system.task_manifest(index)
    body["metadata"].update(uid=str(uuid.uuid4()), generation=1)
    return mirror_snapshot.task_row(TaskView.from_body(body))


async def claim(store: LeaderStore, uids: list[TaskUid], tick: datetime) -> list[ExecutionId]:
    news = [
        NewRun(u, "bench", f"t-{u[:8]}", tick, Origin.SCHEDULE, RunStatus.CLAIMED, 3) for u in uids
    ]
    runs = [r for r in (await store.claim(news)).runs if r is not None]
    assert len(runs) == len(uids), "every tick is new: each claim makes a run"
    return runs


async def record(
    store: LeaderStore, uids: list[TaskUid], runs: list[ExecutionId], tick: datetime
) -> None:
    begins = [
        Begin(
            run,
            1,
            Dispatch("bench", f"pod-{i % PODS}", f"127.0.3.{i % PODS + 1}",
                     uuid.uuid4().hex * 2, tick + TIMEOUT),
            Balance(uids[i], "RoundRobin", {"next": (i + 1) % PODS}),
        )
        for i, run in enumerate(runs)
    ]  # fmt: skip
    assert all(await asyncio.gather(*map(store.begin_dispatch, begins)))


async def confirm(store: LeaderStore, runs: list[ExecutionId]) -> None:
    assert all(await asyncio.gather(*(store.confirm(run, 1) for run in runs)))


async def ticks(store: LeaderStore, uids: list[TaskUid], count: int) -> dict[str, list[float]]:
    spent: dict[str, list[float]] = {}

    async def timed(step: str, work: Awaitable[T], measured: bool) -> T:
        cpu, wall = cpu_seconds(), time.perf_counter()
        result = await work
        if measured:
            spent.setdefault(f"{step}_cpu_ms", []).append((cpu_seconds() - cpu) * 1000)
            spent.setdefault(f"{step}_wall_ms", []).append((time.perf_counter() - wall) * 1000)
        return result

    first = datetime.now(UTC).replace(microsecond=0)
    for n in range(count):
        tick = first + timedelta(seconds=n)
        measured = n > 0  # the first tick warms the connections and statement caches up
        runs = await timed("claim", claim(store, uids, tick), measured)
        await timed("dispatch_records", record(store, uids, runs, tick), measured)
        await timed("confirm", confirm(store, runs), measured)
    return spent


def measure(tasks: int, count: int) -> dict[str, Any]:
    with scratch_leader() as (url, engine, epoch):
        rows = [task_row(index) for index in range(tasks)]
        with fencing.leader_transaction(engine, LOCK, epoch) as conn:
            for row in rows:
                mirror.upsert_task(conn, row)
        uids = [row.uid for row in rows]
        # As a replica gives its leader: the fire lane on a pool of one connection of its own.
        fire = store_engine.create_engine(url, pool_size=1)
        store = LeaderStore(engine, LOCK, epoch, fire_engine=fire)

        async def run() -> dict[str, list[float]]:
            try:
                return await ticks(store, uids, count)
            finally:
                await store.close()

        try:
            spent = asyncio.run(run())
        finally:
            fire.dispose()
    per_tick = {name: round(sum(values) / len(values), 1) for name, values in spent.items()}
    cpu = sum(v for k, v in per_tick.items() if k.endswith("_cpu_ms"))
    return {
        "tasks": tasks,
        "ticks_measured": count - 1,
        **per_tick,
        "cpu_us_per_run": round(cpu * 1000 / tasks, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000, help="Tasks firing in each tick")
    parser.add_argument("--ticks", type=int, default=10, help="ticks, the first one unmeasured")
    args = parser.parse_args()
    if args.ticks < 2:
        parser.error("--ticks must be at least 2 (the first one warms up)")
    print(json.dumps(measure(args.tasks, args.ticks), indent=2))


if __name__ == "__main__":
    main()

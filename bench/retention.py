"""One history-retention round of the leader's store, measured alone against the local MariaDB.

    .venv/bin/python bench/retention.py [--tasks 10000] [--runs 5] [--keep 1000]

Fills a scratch database with ``--tasks`` Tasks of ``--runs`` finished runs each (one a minute,
the newest a minute ago), then times one :meth:`LeaderStore.prune` over every Task with
``maxRuns: --keep`` and the default age (7 days): with ``--keep`` at least ``--runs`` nothing is
due; below it every Task has ``runs - keep`` runs to prune. Prints one JSON document: the runs
pruned, the round's wall time and this process's CPU seconds (user + system) for it. The
database's own CPU is not in it (MariaDB runs apart).

A round runs every ``CADENZA_RETENTION_INTERVAL_SECONDS`` (60 by default) on the leader, so its
CPU over that interval is the share of a core the leader spends on retention.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Engine

from cadenza.core.ids import Epoch, TaskUid
from cadenza.devenv import mariadb
from cadenza.store import engine as store_engine
from cadenza.store import fencing, migrations, schema
from cadenza.store.leader_store import LeaderStore
from cadenza.store.port import HistoryLimit

LOCK = "cadenza-leader"
DEFAULT_AGE = 604_800
ROWS_PER_INSERT = 5000


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def fill(engine: Any, epoch: Epoch, tasks: list[TaskUid], runs: int) -> None:
    now = datetime.now(UTC)
    rows = []
    for uid in tasks:
        for i in range(runs):
            at = now - timedelta(minutes=runs - i)
            rows.append(
                {
                    "task_uid": uid,
                    "namespace": "bench",
                    "task_name": f"t-{uid[:8]}",
                    "scheduled_at": at,
                    "requested_at": at,
                    "created_at": at,
                    "updated_at": at,
                    "finished_at": at,
                    "origin": "schedule",
                    "status": "succeeded",
                    "attempt": 1,
                    "max_attempts": 1,
                    "epoch": epoch,
                }
            )
    with engine.begin() as conn:
        for start in range(0, len(rows), ROWS_PER_INSERT):
            conn.execute(insert(schema.task_executions), rows[start : start + ROWS_PER_INSERT])
        conn.exec_driver_sql("ANALYZE TABLE task_executions")


@contextlib.contextmanager
def scratch_leader() -> Iterator[tuple[str, Engine, Epoch]]:
    """A migrated scratch database on the local MariaDB (its URL and a pool on it), and the
    epoch of a leader that just took the lead there; dropped afterwards."""
    server = mariadb.Server()
    server.check()
    with mariadb.scratch_database(server, "cadenza_bench") as name:
        url = server.url(name)
        engine = store_engine.create_engine(url, pool_size=4)
        try:
            migrations.migrate(engine)
            with server.connect(name) as session, session.cursor() as cur:
                cur.execute(fencing.BUMP_EPOCH_SQL, (LOCK, "bench"))
                cur.execute("SELECT epoch FROM leader_epochs WHERE lock_name = %s", (LOCK,))
                epoch = Epoch(int(cur.fetchone()[0]))
                session.commit()
            yield url, engine, epoch
        finally:
            engine.dispose()


def measure(tasks: int, runs: int, keep: int) -> dict[str, Any]:
    with scratch_leader() as (_, engine, epoch):
        uids = [TaskUid(str(uuid.uuid4())) for _ in range(tasks)]
        fill(engine, epoch, uids, runs)
        store = LeaderStore(engine, LOCK, epoch)
        limits = [HistoryLimit(uid, DEFAULT_AGE, keep) for uid in uids]

        async def one_round() -> int:
            try:
                return await store.prune(limits)
            finally:
                await store.close()

        cpu, wall = cpu_seconds(), time.perf_counter()
        pruned = asyncio.run(one_round())
        return {
            "tasks": tasks,
            "runs_per_task": runs,
            "keep": keep,
            "pruned": pruned,
            "wall_seconds": round(time.perf_counter() - wall, 3),
            "cpu_seconds": round(cpu_seconds() - cpu, 3),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5, help="finished runs per Task (5)")
    parser.add_argument("--keep", type=int, default=1000, help="each Task's maxRuns (1000)")
    args = parser.parse_args()
    print(json.dumps(measure(args.tasks, args.runs, args.keep), indent=2))


if __name__ == "__main__":
    main()

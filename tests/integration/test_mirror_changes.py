"""The leader's mirror follows the objects the watch names, one by one, and ends up where a full
resync would: Tasks created, changed, deleted and created again under their name, Executors
coming and going, pods changing — checked against MySQL after every step."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from sqlalchemy.engine import Engine, make_url

from cadenza.core.ids import Epoch, TaskUid
from cadenza.devenv import mariadb
from cadenza.kube.hub import EXECUTORS_INDEX, PODS_INDEX, TASKS_INDEX, Hub
from cadenza.kube.views import ExecutorView, PodView, TaskView
from cadenza.mirror import MirrorLoop
from cadenza.mirror_snapshot import TaskConditions, snapshot
from cadenza.settings import Settings
from cadenza.store import fencing, mirror_reads
from cadenza.store.mirror_rows import InstanceRow

pytestmark = pytest.mark.mariadb

LOCK = "cadenza.leader"


def task(name: str, uid: str, schedule: str, executor: str) -> TaskView:
    spec = {"schedule": schedule, "executors": [{"name": executor}], "handler": "echo"}
    return TaskView.of(uid, "ns", name, 1, spec)


def executor(name: str, uid: str, app: str) -> ExecutorView:
    return ExecutorView.from_body({
        "metadata": {"uid": uid, "namespace": "ns", "name": name},
        "spec": {"selector": {"matchLabels": {"app": app}}},
    })  # fmt: skip


def pod(name: str, app: str, ready: bool) -> PodView:
    return PodView.from_body({
        "metadata": {"uid": f"pod-{name}", "namespace": "ns", "name": name, "labels": {"app": app}},
        "status": {"phase": "Running", "podIP": "10.0.0.9",
                   "conditions": [{"type": "Ready", "status": str(ready)}]},
    })  # fmt: skip


def epoch_of(mariadb_server: mariadb.Server, database: str) -> Epoch:
    session = mariadb_server.connect(make_url(database).database)
    try:
        with session.cursor() as cur:
            cur.execute(fencing.BUMP_EPOCH_SQL, (LOCK, "replica-a"))
            cur.execute("SELECT epoch FROM leader_epochs WHERE lock_name = %s", (LOCK,))
            row = cur.fetchone()
    finally:
        session.close()
    assert row is not None
    return Epoch(int(row[0]))


def ready_pods(
    instances: Mapping[str, Sequence[InstanceRow]],
) -> dict[str, list[str]]:
    return {u: sorted(p.pod_uid for p in ps if p.ready) for u, ps in instances.items() if ps}


def in_mysql(engine: Engine) -> tuple[Any, ...]:
    with engine.connect() as conn:
        return (
            sorted((t.uid, t.name, t.spec_hash) for t in mirror_reads.read_tasks(conn)),
            sorted((e.uid, e.name, e.spec_hash) for e in mirror_reads.read_executors(conn)),
            ready_pods(mirror_reads.read_instances(conn)),
        )


def wanted(hub: Hub) -> tuple[Any, ...]:
    snap = snapshot(hub)
    return (
        sorted((t.uid, t.name, t.spec_hash) for t in snap.tasks),
        sorted((e.uid, e.name, e.spec_hash) for e in snap.executors),
        ready_pods(snap.instances),
    )


async def test_changes_named_one_by_one_leave_mysql_as_a_resync_would(
    engine: Engine, database: str, mariadb_server: mariadb.Server
) -> None:
    tasks: dict[tuple[str, str], list[TaskView]] = {}
    executors: dict[tuple[str, str], list[ExecutorView]] = {}
    pods: dict[str, list[PodView]] = {"ns": []}
    hub = Hub(indexes={TASKS_INDEX: tasks, EXECUTORS_INDEX: executors, PODS_INDEX: pods})
    told: dict[TaskUid, TaskConditions] = {}
    loop = MirrorLoop(
        hub,
        engine,
        Settings.from_env({}),
        epoch_of(mariadb_server, database),
        on_conditions=told.__setitem__,
    )
    changes = hub.subscribe()  # what the loop's own subscription would be told
    await loop.sync(lambda: True)
    rng = random.Random(9)
    for serial in range(1, 81):
        name = f"t{rng.randrange(8)}"
        pool = f"pool{rng.randrange(2)}"
        action = rng.random()
        if action < 0.45:  # create or change a Task (another schedule or another Executor)
            uid = tasks[("ns", name)][0].uid if ("ns", name) in tasks else f"u{serial}"
            cron = rng.choice(["* * * * * *", "*/5 * * * * *", "0 * * * * *"])
            tasks[("ns", name)] = [task(name, uid, cron, pool)]
            hub.notify("task", "ns", name)
        elif action < 0.6:  # delete a Task
            tasks.pop(("ns", name), None)
            hub.notify("task", "ns", name)
        elif action < 0.7:  # delete it and create it again under its name: a new uid
            tasks[("ns", name)] = [task(name, f"u{serial}", "* * * * * *", pool)]
            hub.notify("task", "ns", name)
        elif action < 0.8:  # an Executor comes or goes
            if ("ns", pool) in executors and rng.random() < 0.5:
                del executors[("ns", pool)]
            else:
                executors[("ns", pool)] = [executor(pool, f"e-{pool}-{serial}", pool)]
            hub.notify("executor", "ns", pool)
        else:  # a pod is created, changes readiness or goes
            worker = f"w{rng.randrange(3)}"
            pods["ns"] = [p for p in pods["ns"] if p.name != worker]
            if rng.random() < 0.8:
                pods["ns"].append(pod(worker, pool, rng.random() < 0.7))
            hub.notify("pod", "ns", worker)
        await loop.sync(lambda: True, changes.take())
        assert await asyncio.to_thread(in_mysql, engine) == wanted(hub), f"after step {serial}"
        for uid, conditions in snapshot(hub).task_conditions.items():
            assert told[uid] == conditions, f"conditions of {uid} after step {serial}"

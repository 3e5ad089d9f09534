"""Reads of the mirror (:mod:`cadenza.store.mirror`): the rows as the leader wrote them, for
the API, the executor pool's persistence and the tests that compare the mirror with the cluster.
"""

from __future__ import annotations

import json
from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.engine import Connection

from cadenza.core.ids import TaskUid
from cadenza.core.taskspec import ExecutorRef
from cadenza.store import schema
from cadenza.store.mirror_rows import ExecutorLink, ExecutorRow, InstanceRow, TaskRow, from_row

_tasks = schema.tasks
_executors = schema.executors
_links = schema.task_executors
_pods = schema.executor_instances


def read_tasks(conn: Connection, namespace: str | None = None) -> list[TaskRow]:
    """The mirrored Tasks, by namespace and name."""
    query = select(_tasks).order_by(_tasks.c.namespace, _tasks.c.name)
    if namespace is not None:
        query = query.where(_tasks.c.namespace == namespace)
    refs: dict[str, list[ExecutorRef]] = defaultdict(list)
    for link in read_task_executors(conn, namespace):
        refs[link.task_uid].append(ExecutorRef(link.executor_name, link.weight, link.priority))
    return [
        from_row(
            TaskRow,
            row,
            executors=tuple(refs[row.uid]),
            spec_json=json.dumps(row.spec, separators=(",", ":")),
        )
        for row in conn.execute(query)
    ]


def read_executors(conn: Connection, namespace: str | None = None) -> list[ExecutorRow]:
    """The mirrored Executors, by namespace and name."""
    query = select(_executors).order_by(_executors.c.namespace, _executors.c.name)
    if namespace is not None:
        query = query.where(_executors.c.namespace == namespace)
    return [from_row(ExecutorRow, row) for row in conn.execute(query)]


def read_instances(conn: Connection) -> dict[str, tuple[InstanceRow, ...]]:
    """The mirrored pods of every Executor that has any, by executor uid, each by pod name."""
    query = select(_pods).order_by(_pods.c.executor_uid, _pods.c.pod_name)
    grouped: dict[str, list[InstanceRow]] = defaultdict(list)
    for row in conn.execute(query):
        grouped[row.executor_uid].append(from_row(InstanceRow, row))
    return {uid: tuple(pods) for uid, pods in grouped.items()}


def read_task_executors(conn: Connection, namespace: str | None = None) -> list[ExecutorLink]:
    """Every Task's references, by task uid, each Task's in its ``spec.executors`` order."""
    query = select(_links).order_by(_links.c.task_uid, _links.c.position)
    if namespace is not None:
        query = query.where(
            _links.c.task_uid.in_(select(_tasks.c.uid).where(_tasks.c.namespace == namespace))
        )
    return [from_row(ExecutorLink, row) for row in conn.execute(query)]


def read_missing_executors(conn: Connection, uid: TaskUid) -> list[str] | None:
    """``tasks.missing_executors`` of one Task; None when it is not mirrored."""
    value = conn.execute(
        select(_tasks.c.missing_executors).where(_tasks.c.uid == uid)
    ).scalar_one_or_none()
    return None if value is None else list(value)

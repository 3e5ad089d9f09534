"""The leader's copy of the Task and Executor resources (and the Executors' pods) in MySQL.

Kubernetes is the source of truth; the mirror turns objects into rows
(:mod:`cadenza.store.mirror_rows`) and the leader writes them here, always through a connection from
:func:`cadenza.store.fencing.leader_transaction`, so a deposed leader cannot write. The readers
return the same dataclasses, so the mirror can be compared with the API's view.

Invariants:

- A row whose ``spec_hash`` did not change is not written at all: a status-only change of a Task
  never rewrites its row nor moves its ``updated_at``.
- Rows are keyed by ``metadata.uid``. A row for the same namespace/name under another uid is a
  resource deleted while nobody watched, and is removed when its successor is written.
- ``task_executors`` holds a Task's ``spec.executors`` in order, by name; ``executor_uid`` and
  ``tasks.missing_executors`` always agree with the ``executors`` rows of the same transaction.
- Deleting a Task keeps its execution history (``task_executions`` has no foreign key).
- :func:`resync` leaves the mirror equal to the snapshot it is given, in one transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import (
    ColumnElement,
    delete,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection

from cadenza.core.ids import TaskUid
from cadenza.core.taskspec import ExecutorRef
from cadenza.store import fencing, schema
from cadenza.store.mirror_rows import (
    ExecutorRow,
    InstanceRow,
    ResyncCounts,
    TaskRow,
    from_row,
    row_values,
)
from cadenza.store.mirror_tasks import Change, upsert_tasks

_NOW = func.utc_timestamp(3)
# Set by ``fencing.leader_transaction`` for the length of each leader transaction.
_EPOCH: ColumnElement[int] = literal_column(f"@{fencing.EPOCH_VARIABLE}")
_RESOLVE = text(
    """
    UPDATE task_executors AS te
    JOIN tasks AS t ON t.uid = te.task_uid
    LEFT JOIN executors AS e ON e.namespace = t.namespace AND e.name = te.executor_name
    SET te.executor_uid = e.uid
    WHERE :namespace IS NULL OR t.namespace = :namespace
    """
)
_tasks = schema.tasks
_executors = schema.executors
_links = schema.task_executors
_pods = schema.executor_instances


# -- writes ------------------------------------------------------------------------------------


def upsert_task(conn: Connection, row: TaskRow) -> bool:
    """Write a Task and its executor references; False when its ``spec_hash`` is unchanged."""
    return upsert_tasks(conn, [row])[row.uid] is not Change.UNCHANGED


def upsert_executor(conn: Connection, row: ExecutorRow) -> bool:
    """Write an Executor; False when its ``spec_hash`` is unchanged. A new Executor resolves the
    references of the Tasks in its namespace that name it."""
    return _upsert_executor(conn, row) is not Change.UNCHANGED


def replace_task_executors(
    conn: Connection, task_uid: TaskUid, entries: Sequence[ExecutorRef]
) -> None:
    """Set a mirrored Task's executor references, resolving each name in its namespace."""
    namespace = conn.execute(
        select(_tasks.c.namespace).where(_tasks.c.uid == task_uid)
    ).scalar_one_or_none()
    if namespace is None:
        raise LookupError(f"task {task_uid} is not in the mirror: write it first")
    conn.execute(delete(_links).where(_links.c.task_uid == task_uid))
    if entries:
        found = conn.execute(
            select(_executors.c.name, _executors.c.uid).where(
                _executors.c.namespace == namespace,
                _executors.c.name.in_([e.name for e in entries]),
            )
        )
        uids = {name: uid for name, uid in found}
        conn.execute(
            insert(_links),
            [
                {
                    "task_uid": task_uid,
                    "executor_name": entry.name,
                    "executor_uid": uids.get(entry.name),
                    "weight": entry.weight,
                    "priority": entry.priority,
                    "position": position,
                }
                for position, entry in enumerate(entries)
            ],
        )
    _refresh_missing(conn, _tasks.c.uid == task_uid)


def resolve_executor_refs(conn: Connection, namespace: str | None = None) -> list[TaskUid]:
    """Point every reference in ``namespace`` (all when None) at the Executor of its name, if
    any; the Tasks whose missing executors changed."""
    conn.execute(_RESOLVE, {"namespace": namespace})
    where = None if namespace is None else _tasks.c.namespace == namespace
    return _refresh_missing(conn, where)


def upsert_instances(conn: Connection, executor_uid: str, pods: Iterable[InstanceRow]) -> bool:
    """Make the Executor's mirrored pods equal to ``pods``; False when nothing changed.

    Only the Kubernetes fields are written; the leader's health findings of a pod stay.
    """
    wanted = {pod.pod_uid: pod for pod in pods}
    current = {pod.pod_uid: pod for pod in _instances(conn, _pods.c.executor_uid == executor_uid)}
    stale = current.keys() - wanted.keys()
    if stale:
        conn.execute(
            delete(_pods).where(_pods.c.executor_uid == executor_uid, _pods.c.pod_uid.in_(stale))
        )
    new = [pod for uid, pod in wanted.items() if uid not in current]
    if new:
        conn.execute(
            insert(_pods).values(updated_at=_NOW, epoch=_EPOCH),
            [{**row_values(pod), "executor_uid": executor_uid} for pod in new],
        )
    changed = [pod for uid, pod in wanted.items() if uid in current and current[uid] != pod]
    for pod in changed:
        conn.execute(
            update(_pods)
            .where(_pods.c.executor_uid == executor_uid, _pods.c.pod_uid == pod.pod_uid)
            .values(**row_values(pod), updated_at=_NOW, epoch=_EPOCH)
        )
    return bool(stale or new or changed)


def delete_task(conn: Connection, uid: TaskUid) -> bool:
    """Remove a Task's mirror rows (references, load-balancer state); its executions stay."""
    return conn.execute(delete(_tasks).where(_tasks.c.uid == uid)).rowcount > 0


def delete_executor(conn: Connection, uid: str) -> bool:
    """Remove an Executor and its pods; Tasks naming it now list it as missing."""
    namespace = conn.execute(
        select(_executors.c.namespace).where(_executors.c.uid == uid)
    ).scalar_one_or_none()
    if namespace is None:
        return False
    # The foreign key sets task_executors.executor_uid to NULL and deletes the pods.
    conn.execute(delete(_executors).where(_executors.c.uid == uid))
    _refresh_missing(conn, _tasks.c.namespace == namespace)
    return True


def resync(
    conn: Connection,
    tasks: Iterable[TaskRow],
    executors: Iterable[ExecutorRow],
    pods_by_executor: Mapping[str, Iterable[InstanceRow]],
) -> ResyncCounts:
    """Make the whole mirror equal to a full snapshot (what a new leader does first)."""
    task_rows = {row.uid: row for row in tasks}
    executor_rows = {row.uid: row for row in executors}
    orphans = pods_by_executor.keys() - executor_rows.keys()
    if orphans:
        raise ValueError(f"pods given for executors not in the snapshot: {sorted(orphans)}")
    changes: list[Change] = []
    # Deletions first: a resource re-created under the same name must not collide with the
    # row of its deleted predecessor.
    deleted = conn.execute(delete(_tasks).where(_tasks.c.uid.not_in(list(task_rows)))).rowcount
    deleted += conn.execute(
        delete(_executors).where(_executors.c.uid.not_in(list(executor_rows)))
    ).rowcount
    changes.extend(_upsert_executor(conn, row, resolve=False) for row in executor_rows.values())
    changes.extend(upsert_tasks(conn, list(task_rows.values())).values())
    for uid in executor_rows:
        if upsert_instances(conn, uid, pods_by_executor.get(uid, ())):
            changes.append(Change.UPDATED)
    resolve_executor_refs(conn)
    return ResyncCounts(
        created=changes.count(Change.CREATED),
        updated=changes.count(Change.UPDATED),
        deleted=deleted,
    )


# -- helpers -----------------------------------------------------------------------------------


def _upsert_executor(conn: Connection, row: ExecutorRow, resolve: bool = True) -> Change:
    stored = conn.execute(
        select(_executors.c.spec_hash).where(_executors.c.uid == row.uid)
    ).scalar_one_or_none()
    if stored == row.spec_hash:
        return Change.UNCHANGED
    values = row_values(row, exclude="uid")
    if stored is not None:
        conn.execute(
            update(_executors)
            .where(_executors.c.uid == row.uid)
            .values(**values, updated_at=_NOW, epoch=_EPOCH)
        )
        return Change.UPDATED
    conn.execute(
        delete(_executors).where(
            _executors.c.namespace == row.namespace,
            _executors.c.name == row.name,
            _executors.c.uid != row.uid,
        )
    )
    conn.execute(
        insert(_executors).values(
            uid=row.uid, **values, created_at=_NOW, updated_at=_NOW, epoch=_EPOCH
        )
    )
    if resolve:
        resolve_executor_refs(conn, row.namespace)
    return Change.CREATED


def _refresh_missing(conn: Connection, where: ColumnElement[bool] | None) -> list[TaskUid]:
    """Recompute ``tasks.missing_executors`` (of the Tasks ``where`` selects); the changed."""
    tasks_query = select(_tasks.c.uid, _tasks.c.missing_executors)
    links_query = (
        select(_links.c.task_uid, _links.c.executor_name)
        .join(_tasks, _tasks.c.uid == _links.c.task_uid)
        .where(_links.c.executor_uid.is_(None))
        .order_by(_links.c.task_uid, _links.c.position)
    )
    if where is not None:
        tasks_query = tasks_query.where(where)
        links_query = links_query.where(where)
    missing: dict[str, list[str]] = defaultdict(list)
    for task_uid, name in conn.execute(links_query):
        missing[task_uid].append(name)
    changed = []
    for uid, stored in conn.execute(tasks_query):
        if list(stored) != missing[uid]:
            conn.execute(
                update(_tasks)
                .where(_tasks.c.uid == uid)
                .values(missing_executors=missing[uid], updated_at=_NOW, epoch=_EPOCH)
            )
            changed.append(TaskUid(uid))
    return changed


def _instances(conn: Connection, where: ColumnElement[bool]) -> list[InstanceRow]:
    return [from_row(InstanceRow, row) for row in conn.execute(select(_pods).where(where))]

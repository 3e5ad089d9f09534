"""History retention in MySQL: which Tasks have finished runs beyond their limits, and pruning them.

A pass over every Task must not cost a transaction per Task: with 10,000 Tasks that was 10,000
fenced transactions a minute (11 CPU-seconds of the leader's a pass) to learn, most of the time,
that nothing was due. :func:`beyond_limits` names the Tasks that may have something to prune in
a few reads; only those are visited by :func:`prune_some`, a hundred Tasks to four statements.

Invariants:
- :func:`beyond_limits` never misses a Task that has runs to prune (it may name a Task that turns
  out to have nothing: open runs count towards the number, and its age test is a little
  generous).
- Only finished runs are deleted, with their attempts; a run still open is never touched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from cadenza.core.ids import TaskUid
from cadenza.core.transitions import TERMINAL
from cadenza.store import schema

_runs = schema.task_executions
_attempts = schema.execution_attempts
_FINISHED = [s.value for s in TERMINAL]

COUNT_CHUNK = 1000
"""Tasks per counting query (an ``IN`` list of this many uids)."""
TASKS_PER_TRANSACTION = 100
"""Tasks visited in one transaction at most (each costs two reads even with nothing to delete):
a long transaction holds the epoch row's share lock, which a new leader's epoch bump waits for."""


@dataclasses.dataclass(frozen=True)
class HistoryLimit:
    """How much of one Task's history is kept (``spec.history``)."""

    task: TaskUid
    max_age_seconds: int
    max_runs: int


@dataclasses.dataclass(frozen=True)
class Due:
    """A Task that may have runs to prune, and why."""

    limit: HistoryLimit
    by_count: bool
    """It has more runs than its number."""
    by_age: bool
    """It has a finished run older than its age."""


def beyond_limits(conn: Connection, limits: Sequence[HistoryLimit]) -> list[Due]:
    """The Tasks of ``limits`` that may have runs to prune: more runs than their number, or a
    finished run older than their age. Reads indexes: each Task's ``(task_uid, id)`` entries to
    count, and the ``finished_at`` index only below the youngest age asked for."""
    by_task = {limit.task: limit for limit in limits}
    if not by_task:
        return []
    counted: set[TaskUid] = set()
    uids = list(by_task)
    for start in range(0, len(uids), COUNT_CHUNK):
        rows = conn.execute(
            select(_runs.c.task_uid, func.count())
            .where(_runs.c.task_uid.in_(uids[start : start + COUNT_CHUNK]))
            .group_by(_runs.c.task_uid)
        )
        counted.update(TaskUid(uid) for uid, n in rows if n > by_task[TaskUid(uid)].max_runs)
    youngest = min(limit.max_age_seconds for limit in by_task.values())
    rows = conn.execute(
        select(
            _runs.c.task_uid,
            func.timestampdiff(
                text("MICROSECOND"), func.min(_runs.c.finished_at), func.utc_timestamp(3)
            ),
        )
        .where(_runs.c.finished_at < _older_than(youngest))
        .group_by(_runs.c.task_uid)
    )
    aged: set[TaskUid] = set()
    for uid, microseconds in rows:
        limit = by_task.get(TaskUid(uid))
        if limit is not None and microseconds >= limit.max_age_seconds * 1_000_000:
            aged.add(limit.task)
    return [
        Due(limit, limit.task in counted, limit.task in aged)
        for limit in by_task.values()
        if limit.task in counted or limit.task in aged
    ]


def prune_some(conn: Connection, due: Sequence[Due], batch: int) -> tuple[int, list[Due]]:
    """Delete up to ``batch`` finished runs, with their attempts, of the first
    :data:`TASKS_PER_TRANSACTION` Tasks of ``due``: those older than their Task's age or beyond
    its newest ``max_runs``. Four statements whatever the number of Tasks. Returns the runs
    pruned and the Tasks still to visit: those after the first hundred, and those that got no
    run of the batch because other Tasks' runs filled it (a Task with a large backlog gets one
    batch a round and never starves the others)."""
    chosen = list(due[:TASKS_PER_TRANSACTION])
    later = list(due[TASKS_PER_TRANSACTION:])
    cutoffs = _cutoffs(conn, [d.limit for d in chosen if d.by_count])
    wanted = []
    for d in chosen:
        mine = _runs.c.task_uid == d.limit.task
        if d.limit.task in cutoffs:
            wanted.append(and_(mine, _runs.c.id <= cutoffs[d.limit.task]))
        if d.by_age:
            wanted.append(and_(mine, _runs.c.finished_at < _older_than(d.limit.max_age_seconds)))
    if not wanted:
        return 0, later
    rows = conn.execute(
        select(_runs.c.id, _runs.c.task_uid)
        .where(_runs.c.status.in_(_FINISHED), or_(*wanted))
        .limit(batch)
    ).all()
    if len(rows) == batch:
        served = {TaskUid(uid) for _, uid in rows}
        later = [d for d in chosen if d.limit.task not in served] + later
    if not rows:
        return 0, later
    ids = [run for run, _ in rows]
    conn.execute(delete(_attempts).where(_attempts.c.execution_id.in_(ids)))
    gone = int(conn.execute(delete(_runs).where(_runs.c.id.in_(ids))).rowcount)
    return gone, later


def _cutoffs(conn: Connection, limits: Sequence[HistoryLimit]) -> dict[TaskUid, int]:
    """Each Task's newest id beyond its ``max_runs`` (the Tasks with no more runs than that are
    missing), in one statement: one index lookup per Task."""
    if not limits:
        return {}
    one = (
        f"(SELECT task_uid, id FROM `{_runs.name}` WHERE task_uid = %s"
        " ORDER BY id DESC LIMIT 1 OFFSET %s)"
    )
    sql = " UNION ALL ".join([one] * len(limits))
    params = tuple(v for limit in limits for v in (limit.task, limit.max_runs))
    return {TaskUid(uid): int(i) for uid, i in conn.exec_driver_sql(sql, params)}


def _older_than(seconds: int) -> ColumnElement[Any]:
    return func.utc_timestamp(3) - text(f"INTERVAL {int(seconds)} SECOND")

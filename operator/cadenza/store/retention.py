"""History retention in MySQL: which Tasks have finished runs beyond their limits, and pruning them.

A pass over every Task must not cost a transaction per Task: with 10,000 Tasks that was 10,000
fenced transactions a minute (11 CPU-seconds of the leader's a pass) to learn, most of the time,
that nothing was due. :func:`beyond_limits` names the Tasks that may have something to prune in
a few reads; only those are visited by :func:`prune`.

Invariants:
- :func:`beyond_limits` never misses a Task that :func:`prune` would delete runs of (it may name
  a Task that turns out to have nothing: open runs count towards the number, and its age test
  is a little generous).
- Only finished runs are deleted, with their attempts; a run still open is never touched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, or_, select, text
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


def beyond_limits(conn: Connection, limits: Sequence[HistoryLimit]) -> set[TaskUid]:
    """The Tasks of ``limits`` that may have runs to prune: more runs than their number, or a
    finished run older than their age. Reads indexes: each Task's ``(task_uid, id)`` entries to
    count, and the ``finished_at`` index only below the youngest age asked for."""
    by_task = {limit.task: limit for limit in limits}
    if not by_task:
        return set()
    found: set[TaskUid] = set()
    uids = list(by_task)
    for start in range(0, len(uids), COUNT_CHUNK):
        rows = conn.execute(
            select(_runs.c.task_uid, func.count())
            .where(_runs.c.task_uid.in_(uids[start : start + COUNT_CHUNK]))
            .group_by(_runs.c.task_uid)
        )
        found.update(TaskUid(uid) for uid, n in rows if n > by_task[TaskUid(uid)].max_runs)
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
    for uid, microseconds in rows:
        limit = by_task.get(TaskUid(uid))
        if limit is not None and microseconds >= limit.max_age_seconds * 1_000_000:
            found.add(limit.task)
    return found


def prune_some(conn: Connection, limits: Sequence[HistoryLimit], batch: int) -> tuple[int, int]:
    """:func:`prune` the Tasks of ``limits`` in order until ``batch`` runs went or
    :data:`TASKS_PER_TRANSACTION` Tasks were visited: the runs pruned and the Tasks visited."""
    gone = visited = 0
    for limit in limits[:TASKS_PER_TRANSACTION]:
        gone += prune(conn, limit, batch)
        visited += 1
        if gone >= batch:
            break
    return gone, visited


def prune(conn: Connection, limit: HistoryLimit, batch: int = 1000) -> int:
    """Delete up to ``batch`` finished runs of the Task older than its age or beyond its newest
    ``max_runs``, with their attempts; how many runs went."""
    mine = _runs.c.task_uid == limit.task
    cutoff = conn.execute(
        select(_runs.c.id).where(mine).order_by(_runs.c.id.desc()).offset(limit.max_runs).limit(1)
    ).scalar_one_or_none()
    too_old = _runs.c.finished_at < _older_than(limit.max_age_seconds)
    condition = too_old if cutoff is None else or_(too_old, _runs.c.id <= cutoff)
    ids = list(
        conn.execute(
            select(_runs.c.id).where(mine, _runs.c.status.in_(_FINISHED), condition).limit(batch)
        ).scalars()
    )
    if not ids:
        return 0
    conn.execute(delete(_attempts).where(_attempts.c.execution_id.in_(ids)))
    return int(conn.execute(delete(_runs).where(_runs.c.id.in_(ids))).rowcount)


def _older_than(seconds: int) -> ColumnElement[Any]:
    return func.utc_timestamp(3) - text(f"INTERVAL {int(seconds)} SECOND")

"""What a Task's status shows, read from its execution history in three indexed queries.

Counters cover the history that retention keeps (``spec.history``), so they may shrink when old
runs are pruned; they are a summary, the rows are the record.

Only the columns a status shows are read: the status is written for every Task every few
seconds, and the leader's cost of a query grows with the columns it returns (PyMySQL parses a
descriptor per column per result).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.engine import Connection, Engine, Row

from cadenza.core.ids import ExecutionId, TaskUid
from cadenza.core.transitions import RunStatus
from cadenza.store import executions, schema
from cadenza.store.runs import OPEN

_runs = schema.task_executions
_FAILURES = (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.LOST)
_STREAK_CAP = 100
"""A failure streak is counted up to this many runs."""


@dataclasses.dataclass(frozen=True, slots=True)
class RunBrief:
    """What a status shows of one run."""

    id: ExecutionId
    status: RunStatus
    attempt: int
    error: str | None
    scheduled_at: datetime | None
    dispatched_at: datetime | None
    pod_name: str | None


@dataclasses.dataclass(frozen=True)
class Summary:
    last: RunBrief | None
    last_schedule_at: datetime | None
    last_success_at: datetime | None
    open: list[RunBrief]
    counters: dict[str, int]
    consecutive_failures: int


_BRIEF = (
    _runs.c.id,
    _runs.c.status,
    _runs.c.attempt,
    _runs.c.error,
    _runs.c.scheduled_at,
    _runs.c.dispatched_at,
    _runs.c.pod_name,
)


def read(engine: Engine, task: TaskUid) -> Summary:
    """The Task's summary, all of it from one snapshot of the history: read committed would let
    a run finish between the queries (a "Running" last run beside a streak its success just
    reset). Repeatable read is set for this transaction only, so the pooled session keeps its
    read committed and needs no reset when it goes back to the pool."""
    with engine.connect() as conn, conn.begin():
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        return task_summary(conn, task)


_TASK = bindparam("task", type_=_runs.c.task_uid.type)
_MINE = _runs.c.task_uid == _TASK
_FINISHED = _runs.c.finished_at.is_not(None)
_MISFIRE = (_runs.c.origin == executions.Origin.MISFIRE.value).label("misfire")
# Built once: the status is written for every Task every few seconds, and building and keying
# the statements cost the leader more than running them.
_GROUPS = (
    select(
        _runs.c.status,
        _MISFIRE,
        func.count(),
        func.max(_runs.c.scheduled_at),
        func.max(_runs.c.finished_at),
    )
    .where(_MINE)
    .group_by(_runs.c.status, _MISFIRE)
)
_OPEN_AND_LAST = (
    select(*_BRIEF)
    .where(
        _MINE,
        or_(
            _runs.c.status.in_([s.value for s in OPEN]),
            _runs.c.id == select(func.max(_runs.c.id)).where(_MINE).scalar_subquery(),
        ),
    )
    .order_by(_runs.c.id)
)
_LAST_GOOD = (
    select(func.coalesce(func.max(_runs.c.id), 0))
    .where(
        _MINE,
        _FINISHED,
        _runs.c.status.not_in([*(s.value for s in _FAILURES), RunStatus.SKIPPED.value]),
    )
    .scalar_subquery()
)
_STREAK = select(func.count()).select_from(
    select(_runs.c.id)
    .where(
        _MINE,
        _FINISHED,
        _runs.c.status.in_([s.value for s in _FAILURES]),
        _runs.c.id > _LAST_GOOD,
    )
    .limit(_STREAK_CAP)
    .subquery()
)


def task_summary(conn: Connection, task: TaskUid) -> Summary:
    """Three indexed queries: the counts and latest times per status; the open runs with the
    last run; the failure streak. :func:`read` runs them in one snapshot."""
    groups = conn.execute(_GROUPS, {"task": task}).all()
    briefs = [_brief(row) for row in conn.execute(_OPEN_AND_LAST, {"task": task})]
    by_status: dict[str, int] = {}
    for status, _, count, _, _ in groups:
        by_status[status] = by_status.get(status, 0) + int(count)
    scheduled = [at for _, _, _, at, _ in groups if at is not None]
    succeeded = [at for status, _, _, _, at in groups if status == RunStatus.SUCCEEDED.value and at]
    return Summary(
        last=briefs[-1] if briefs else None,
        last_schedule_at=max(scheduled, default=None),
        last_success_at=max(succeeded, default=None),
        open=[b for b in briefs if b.status in OPEN],
        counters={
            "succeeded": by_status.get(RunStatus.SUCCEEDED.value, 0),
            "failed": sum(by_status.get(s.value, 0) for s in _FAILURES),
            "skipped": by_status.get(RunStatus.SKIPPED.value, 0),
            "misfired": sum(int(count) for _, m, count, _, _ in groups if m),
        },
        consecutive_failures=_streak(conn, task),
    )


def _streak(conn: Connection, task: TaskUid) -> int:
    """Finished runs that failed since the last finished run that did not (skipped runs do not
    count either way), up to the cap: one number, counted by the server."""
    return int(conn.execute(_STREAK, {"task": task}).scalar_one())


def _brief(row: Row[Any, Any, Any, Any, Any, Any, Any]) -> RunBrief:
    return RunBrief(
        id=ExecutionId(int(row.id)),
        status=RunStatus(row.status),
        attempt=int(row.attempt),
        error=row.error,
        scheduled_at=row.scheduled_at,
        dispatched_at=row.dispatched_at,
        pod_name=row.pod_name,
    )

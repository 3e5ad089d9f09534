"""What a Task's status shows, read from its execution history: three indexed queries for all the
Tasks of a status flush.

Counters cover the history that retention keeps (``spec.history``), so they may shrink when old
runs are pruned; they are a summary, the rows are the record.

Only the columns a status shows are read: the status is written for every Task every few
seconds, and the leader's cost of a query grows with the columns it returns (PyMySQL parses a
descriptor per column per result).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, bindparam, case, func, or_, select
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


def read_many(engine: Engine, tasks: Sequence[TaskUid]) -> dict[TaskUid, Summary]:
    """Each Task's summary, all of them from one snapshot of the history: read committed would
    let a run finish between the queries (a "Running" last run beside a streak its success just
    reset). Repeatable read is set for this transaction only, so the pooled session keeps its
    read committed and needs no reset when it goes back to the pool.

    Three queries whatever the number of Tasks: the status flusher reads the summaries of every
    Task it writes in one go, and each statement costs the leader more than each row."""
    wanted = list(dict.fromkeys(tasks))
    if not wanted:
        return {}
    with engine.connect() as conn, conn.begin():
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        return summaries(conn, wanted)


_TASKS = bindparam("tasks", expanding=True, type_=_runs.c.task_uid.type)
_THEIRS = _runs.c.task_uid.in_(_TASKS)
_FINISHED = _runs.c.finished_at.is_not(None)
_MISFIRE = (_runs.c.origin == executions.Origin.MISFIRE.value).label("misfire")
_NOT_A_FAILURE = [*(s.value for s in _FAILURES), RunStatus.SKIPPED.value]
# Built once: the status is written for every Task every few seconds, and building and keying
# the statements cost the leader more than running them.
_GROUPS = (
    select(
        _runs.c.task_uid,
        _runs.c.status,
        _MISFIRE,
        func.count(),
        func.max(_runs.c.scheduled_at),
        func.max(_runs.c.finished_at),
        # The group's last finished run: a failure streak counts the failures after the last
        # finished run that was not one.
        func.max(case((_FINISHED, _runs.c.id), else_=None)),
    )
    .where(_THEIRS)
    .group_by(_runs.c.task_uid, _runs.c.status, _MISFIRE)
)
_LAST_IDS = select(func.max(_runs.c.id)).where(_THEIRS).group_by(_runs.c.task_uid)
_OPEN_AND_LAST = (
    select(_runs.c.task_uid, *_BRIEF).where(
        _THEIRS,
        or_(_runs.c.status.in_([s.value for s in OPEN]), _runs.c.id.in_(_LAST_IDS)),
    )
    # Not ordered by id: that would have the server walk the primary key of the whole table.
)


def summaries(conn: Connection, tasks: list[TaskUid]) -> dict[TaskUid, Summary]:
    """Three indexed queries for all of ``tasks``: the counts and latest times per status; the
    open runs with the last run; the failure streaks. :func:`read_many` runs them in one
    snapshot."""
    groups: dict[str, list[tuple[Any, ...]]] = {task: [] for task in tasks}
    for row in conn.execute(_GROUPS, {"tasks": tasks}):
        groups[row[0]].append(tuple(row))
    briefs: dict[str, list[RunBrief]] = {task: [] for task in tasks}
    for row in sorted(conn.execute(_OPEN_AND_LAST, {"tasks": tasks}), key=lambda r: int(r.id)):
        briefs[row.task_uid].append(_brief(row))
    last_good = {
        task: max((int(g[6]) for g in rows if g[1] not in _NOT_A_FAILURE and g[6]), default=0)
        for task, rows in groups.items()
    }
    streaks = _streaks(conn, last_good)
    return {task: _summary(groups[task], briefs[task], streaks.get(task, 0)) for task in tasks}


def _streaks(conn: Connection, last_good: dict[str, int]) -> dict[str, int]:
    """Each Task's finished runs that failed after its last good one, counted by the server
    from the (task, id) index: only the rows after the last good run are read."""
    statement = _streak_statement(len(last_good))
    values: dict[str, str | int] = {}
    for i, (task, good) in enumerate(last_good.items()):
        values[f"t{i}"] = task
        values[f"g{i}"] = good
    return {task: int(count) for task, count in conn.execute(statement, values)}


@functools.lru_cache(maxsize=64)
def _streak_statement(tasks: int) -> Select[str, int]:
    """The streak query for this many Tasks, built once per size."""
    since = [
        and_(_runs.c.task_uid == bindparam(f"t{i}"), _runs.c.id > bindparam(f"g{i}"))
        for i in range(tasks)
    ]
    return (
        select(_runs.c.task_uid, func.count())
        .where(or_(*since), _FINISHED, _runs.c.status.in_([s.value for s in _FAILURES]))
        .group_by(_runs.c.task_uid)
    )


def _summary(groups: list[tuple[Any, ...]], briefs: list[RunBrief], streak: int) -> Summary:
    by_status: dict[str, int] = {}
    for _, status, _, count, _, _, _ in groups:
        by_status[status] = by_status.get(status, 0) + int(count)
    scheduled = [row[4] for row in groups if row[4] is not None]
    succeeded = [row[5] for row in groups if row[1] == RunStatus.SUCCEEDED.value and row[5]]
    return Summary(
        last=briefs[-1] if briefs else None,
        last_schedule_at=max(scheduled, default=None),
        last_success_at=max(succeeded, default=None),
        open=[b for b in briefs if b.status in OPEN],
        counters={
            "succeeded": by_status.get(RunStatus.SUCCEEDED.value, 0),
            "failed": sum(by_status.get(s.value, 0) for s in _FAILURES),
            "cancelled": by_status.get(RunStatus.CANCELLED.value, 0),
            "skipped": by_status.get(RunStatus.SKIPPED.value, 0),
            "misfired": sum(int(row[3]) for row in groups if row[2]),
        },
        consecutive_failures=min(streak, _STREAK_CAP),
    )


def _brief(row: Row[Any, Any, Any, Any, Any, Any, Any, Any]) -> RunBrief:
    return RunBrief(
        id=ExecutionId(int(row.id)),
        status=RunStatus(row.status),
        attempt=int(row.attempt),
        error=row.error,
        scheduled_at=row.scheduled_at,
        dispatched_at=row.dispatched_at,
        pod_name=row.pod_name,
    )

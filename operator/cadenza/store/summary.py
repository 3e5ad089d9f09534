"""What a Task's status shows, read from its execution history in a few indexed queries.

Counters cover the history that retention keeps (``spec.history``), so they may shrink when old
runs are pruned; they are a summary, the rows are the record.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from cadenza.core.ids import TaskUid
from cadenza.core.transitions import RunStatus
from cadenza.store import executions, schema
from cadenza.store.runs import OPEN

_runs = schema.task_executions
_FAILURES = (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.LOST)
_RECENT = 100


@dataclasses.dataclass(frozen=True)
class Summary:
    last: executions.Execution | None
    last_schedule_at: datetime | None
    last_success_at: datetime | None
    open: list[executions.Execution]
    counters: dict[str, int]
    consecutive_failures: int


def task_summary(conn: Connection, task: TaskUid) -> Summary:
    """Four indexed queries: the counts and latest times per status, the open runs, and the
    latest finished statuses (for the failure streak) with the last run."""
    mine = _runs.c.task_uid == task
    misfire = (_runs.c.origin == executions.Origin.MISFIRE.value).label("misfire")
    groups = conn.execute(
        select(
            _runs.c.status,
            misfire,
            func.count(),
            func.max(_runs.c.scheduled_at),
            func.max(_runs.c.finished_at),
        )
        .where(mine)
        .group_by(_runs.c.status, misfire)
    ).all()
    by_status: dict[str, int] = {}
    for status, _, count, _, _ in groups:
        by_status[status] = by_status.get(status, 0) + int(count)
    scheduled = [at for _, _, _, at, _ in groups if at is not None]
    succeeded = [at for status, _, _, _, at in groups if status == RunStatus.SUCCEEDED.value and at]
    last_row = conn.execute(select(_runs).where(mine).order_by(_runs.c.id.desc()).limit(1)).first()
    open_rows = conn.execute(
        select(_runs).where(mine, _runs.c.status.in_([s.value for s in OPEN])).order_by(_runs.c.id)
    )
    recent = conn.execute(
        select(_runs.c.status)
        .where(mine, _runs.c.finished_at.is_not(None), _runs.c.status != RunStatus.SKIPPED.value)
        .order_by(_runs.c.id.desc())
        .limit(_RECENT)
    ).scalars()
    streak = 0
    for status in recent:
        if RunStatus(status) not in _FAILURES:
            break
        streak += 1
    return Summary(
        last=executions.execution_from_row(last_row) if last_row is not None else None,
        last_schedule_at=max(scheduled, default=None),
        last_success_at=max(succeeded, default=None),
        open=[executions.execution_from_row(r) for r in open_rows],
        counters={
            "succeeded": by_status.get(RunStatus.SUCCEEDED.value, 0),
            "failed": sum(by_status.get(s.value, 0) for s in _FAILURES),
            "skipped": by_status.get(RunStatus.SKIPPED.value, 0),
            "misfired": sum(int(count) for _, m, count, _, _ in groups if m),
        },
        consecutive_failures=streak,
    )

"""Sidecar reports applied many at a time: one locking read for a batch, a few writes.

The callback API checks each report against the locked rows and decides with the core's run
rules (:func:`cadenza.core.runs.after_report`); this module only reads and writes.

Invariant: :func:`end_many_checked` writes without guards of its own, so call it only for
reports checked against rows that :func:`lock_many_for_reports` locked in the same
transaction; every change it writes is noted in the change log the leader reads.

How long a run has been over is measured on the database's clock, from the ``updated_at`` its
row took with its final state (every write that ends a run sets it), never from ``finished_at``,
which may be the pod's own clock (a report's ``finishedAt``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.engine import Connection

from cadenza.core.ids import ExecutionId, TaskUid
from cadenza.core.runs import Outcome
from cadenza.core.transitions import RunStatus, is_terminal
from cadenza.store import bulk, changelog, schema, sqltext
from cadenza.store.executions import Origin

_runs = schema.task_executions
_attempts = schema.execution_attempts


@dataclasses.dataclass
class Locked:
    """A run as callbacks are checked against it, locked for their updates."""

    task: TaskUid
    status: RunStatus
    attempt: int
    token_hashes: dict[int, str | None]
    """The callback token hash of each attempt the run has had."""
    over_for: float | None = None
    """Seconds since the run took its final state, by the database's clock; None while it is
    not over."""
    tick: datetime | None = None
    """A scheduled run's tick (UTC) while no start of it is recorded: the first report that
    says when it started tells how late it did."""


# Sent as text (:mod:`cadenza.store.sqltext`): every callback batch runs both, and building
# and processing a statement's parameters cost the leader more than running it.
_TOKEN_HASHES = (
    "SELECT `execution_id`, `attempt`, `callback_token_hash` FROM `execution_attempts` "
    "WHERE `execution_id` IN ({})"
)
_LOCK_FOR_REPORTS = (
    "SELECT r.`id`, r.`task_uid`, r.`status`, r.`attempt`, a.`attempt`, "
    "a.`callback_token_hash`, r.`updated_at`, UTC_TIMESTAMP(3), r.`scheduled_at`, r.`origin`, "
    "r.`started_at` FROM `task_executions` AS r "
    "LEFT OUTER JOIN `execution_attempts` AS a ON a.`execution_id` = r.`id` "
    "WHERE r.`id` IN ({}) ORDER BY r.`id` FOR UPDATE"
)


def token_hashes(
    conn: Connection, runs: Sequence[ExecutionId]
) -> dict[ExecutionId, dict[int, str | None]]:
    """The callback token hash of each attempt of the runs, read without locking anything (an
    attempt's hash never changes once written): callbacks are checked against it before they
    may wait for a run's lock."""
    rows = sqltext.execute(conn, _TOKEN_HASHES.format(sqltext.ids(runs)))
    found: dict[ExecutionId, dict[int, str | None]] = {}
    for run, attempt, token_hash in map(tuple, rows):
        found.setdefault(ExecutionId(int(run)), {})[int(attempt)] = token_hash
    return found


def lock_many_for_reports(
    conn: Connection, runs: Sequence[ExecutionId]
) -> dict[ExecutionId, Locked]:
    """The runs with their attempts' token hashes, in one locking read (in id order)."""
    rows = sqltext.execute(conn, _LOCK_FOR_REPORTS.format(sqltext.ids(runs)))
    found: dict[ExecutionId, Locked] = {}
    for row in map(tuple, rows):
        run, task, status, current, attempt, token_hash, changed, now, tick, origin, started = row
        key = ExecutionId(int(run))
        entry = found.get(key)
        if entry is None:
            state = RunStatus(status)
            over_for = (now - changed).total_seconds() if is_terminal(state) else None
            entry = found[key] = Locked(TaskUid(task), state, int(current), {}, over_for)
            if tick is not None and origin == Origin.SCHEDULE.value and started is None:
                entry.tick = tick.replace(tzinfo=UTC)  # a naive UTC time, as the driver reads it
        if attempt is not None:
            entry.token_hashes[int(attempt)] = token_hash
    return found


_NOW_SQL = "UTC_TIMESTAMP(3)"
_FINISH = {
    "started_at": "COALESCE(v.`started_at`, t.`started_at`)",
    "finished_at": f"COALESCE(v.`finished_at`, {_NOW_SQL})",
    "next_attempt_at": "NULL",
    "updated_at": _NOW_SQL,
}
_RETRY = {
    "status": f"'{RunStatus.QUEUED.value}'",
    "callback_token_hash": "NULL",
    "updated_at": _NOW_SQL,
}
_CLOSE = {"finished_at": f"COALESCE(v.`finished_at`, {_NOW_SQL})"}


def end_many_checked(
    conn: Connection, ends: Sequence[tuple[ExecutionId, int, Outcome, datetime | None]]
) -> None:
    """End attempts already checked against rows locked by :func:`lock_many_for_reports` in
    this transaction: finish the run (``None``) or queue its retry for the time given; and
    note each in the change log. A few statements whatever the number."""
    if not ends:
        return
    finishes = [(r, a, o) for r, a, o, at in ends if at is None]
    retries = [(r, a, o, at) for r, a, o, at in ends if at is not None]
    if finishes:
        rows = [
            {
                "id": run,
                "status": o.status.value,
                "error": o.error,
                "result": o.result,
                "exit_code": o.exit_code,
                "started_at": o.started_at,
                "finished_at": o.finished_at,
            }
            for run, _, o in finishes
        ]
        bulk.update_by_key(conn, _runs, "id", rows, _FINISH)
    if retries:
        rows = [
            {"id": run, "error": o.error, "exit_code": o.exit_code, "next_attempt_at": at}
            for run, _, o, at in retries
        ]
        bulk.update_by_key(conn, _runs, "id", rows, _RETRY)
    closes = [
        {
            "execution_id": run,
            "attempt": attempt,
            "status": o.status.value,
            "error": o.error,
            "finished_at": o.finished_at,
        }
        for run, attempt, o, _ in ends
    ]
    bulk.update_by_key(conn, _attempts, ("execution_id", "attempt"), closes, _CLOSE)
    changelog.note_changes(conn, [run for run, _, _, _ in ends])

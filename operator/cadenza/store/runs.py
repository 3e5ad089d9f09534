"""A run's life after its claim: dispatch, retry, finish — as guarded state transitions.

Invariants:

- Every transition applies only from the states the core allows it to leave
  (:mod:`cadenza.core.runs`): a single one as ``UPDATE ... WHERE id = :id AND attempt =
  :attempt AND status IN (...)``, a batch (``begin_many``, ``confirm_many``) by locking its
  rows in one read and deciding each in order. A duplicate or late report (a callback that
  arrives twice, a leader that resumes after a pause) changes nothing and the caller learns it
  from ``False``. A finished run never moves backwards; only ``lost`` may still be corrected by
  the real result of the same attempt. Callback batches live in :mod:`cadenza.store.reports`.
- Dispatches and retries are leader writes (fenced connection); callbacks are applied by any
  replica, guarded by the attempt, the state and the per-run token checked before.
- ``execution_attempts`` gets one row per dispatch and its outcome, so history shows where
  every attempt went.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.engine import Connection

from cadenza.core.ids import Epoch, ExecutionId, TaskUid
from cadenza.core.runs import DISPATCHABLE, OPEN, Outcome, may_send, sources_of
from cadenza.core.transitions import RunStatus
from cadenza.store import bulk, executions, schema, sqltext

__all__ = ["OPEN", "Dispatch", "Outcome"]

_NOW = func.utc_timestamp(3)
_runs = schema.task_executions
_attempts = schema.execution_attempts
_OPEN = [s.value for s in OPEN]


@dataclasses.dataclass(frozen=True)
class Dispatch:
    """Where one attempt went."""

    executor: str
    pod: str
    ip: str | None
    token_hash: str
    deadline_at: datetime


def _sendable(run: ExecutionId, attempt: int) -> Any:
    """The run may take ``attempt`` now: it waits for a pod, or ``attempt`` was just refused by
    another pod (re-pointed without going back to waiting: a 429 moves on at once)."""
    return and_(
        _runs.c.id == run,
        or_(
            _runs.c.status.in_([s.value for s in DISPATCHABLE]),
            and_(_runs.c.status == RunStatus.DISPATCHED.value, _runs.c.attempt == attempt),
        ),
    )


# -- the same, many runs at a time (the leader's batches) ----------------------------------------

_BEGIN_FIXED = {
    "next_attempt_at": "NULL",
    "dispatched_at": "UTC_TIMESTAMP(3)",
    "updated_at": "UTC_TIMESTAMP(3)",
}
"""What :func:`begin_many` sets the same on every run (the rest comes from each run's row)."""
_MAY_SEND = "t.`status` IN ({}) OR (t.`status` = '{}' AND t.`attempt` = v.`attempt`)".format(
    ", ".join(f"'{s.value}'" for s in sorted(DISPATCHABLE)), RunStatus.DISPATCHED.value
)
""":func:`cadenza.core.runs.may_send` as the guard of :func:`begin_many`'s update."""
_POINT_ATTEMPT = (
    "INSERT INTO `execution_attempts` (`execution_id`, `attempt`, `executor_name`, `pod_name`, "
    "`pod_ip`, `callback_token_hash`, `status`, `dispatched_at`) VALUES {} "
    "ON DUPLICATE KEY UPDATE `executor_name` = VALUES(`executor_name`), "
    "`pod_name` = VALUES(`pod_name`), `pod_ip` = VALUES(`pod_ip`), "
    "`callback_token_hash` = VALUES(`callback_token_hash`), `status` = VALUES(`status`)"
)


def _lock(
    conn: Connection, runs: Sequence[ExecutionId]
) -> dict[ExecutionId, tuple[RunStatus, int]]:
    """The runs' status and attempt, locked until the transaction ends."""
    rows = sqltext.execute(
        conn,
        "SELECT `id`, `status`, `attempt` FROM `task_executions` "
        f"WHERE `id` IN ({sqltext.ids(runs)}) FOR UPDATE",
    )
    return {ExecutionId(int(i)): (RunStatus(s), int(a)) for i, s, a in map(tuple, rows)}


def begin_many(
    conn: Connection, begins: Sequence[tuple[ExecutionId, int, Dispatch]], epoch: Epoch
) -> list[bool]:
    """:func:`begin_dispatch` for many runs: a few statements whatever their number, each run
    with its own answer. As a rule one guarded update decides them all; only when it left some
    runs alone are they read back to learn which."""
    if not begins:
        return []
    if len({run for run, _, _ in begins}) == len(begins):
        in_id_order = sorted(begins, key=lambda begin: begin[0])  # rows locked as elsewhere
        pointed = bulk.update_by_key(
            conn, _runs, "id", _pointings(in_id_order, epoch), _BEGIN_FIXED, where=_MAY_SEND
        )
        answers = [True] * len(begins) if pointed == len(begins) else _pointed(conn, begins)
    else:  # one run twice: decided one after the other, as separate writes would
        answers = _in_order(conn, begins)
        last = {b[0]: b for b, ok in zip(begins, answers, strict=True) if ok}  # the later wins
        bulk.update_by_key(conn, _runs, "id", _pointings(list(last.values()), epoch), _BEGIN_FIXED)
    chosen = [b for b, ok in zip(begins, answers, strict=True) if ok]
    if chosen:
        literal = sqltext.Literals(conn)
        now = literal.when(datetime.now(UTC))
        status = literal(RunStatus.DISPATCHED.value)
        rows = [
            f"({int(run)}, {int(attempt)}, {literal(to.executor)}, {literal(to.pod)}, "
            f"{literal(to.ip)}, {literal(to.token_hash)}, {status}, {now})"
            for run, attempt, to in chosen
        ]
        sqltext.execute(conn, _POINT_ATTEMPT.format(", ".join(rows)))
    return answers


def _pointings(
    begins: Sequence[tuple[ExecutionId, int, Dispatch]], epoch: Epoch
) -> list[dict[str, Any]]:
    return [
        {
            "id": run,
            "status": RunStatus.DISPATCHED.value,
            "attempt": attempt,
            "executor_name": to.executor,
            "pod_name": to.pod,
            "pod_ip": to.ip,
            "callback_token_hash": to.token_hash,
            "deadline_at": to.deadline_at,
            "epoch": epoch,
        }
        for run, attempt, to in begins
    ]


def _pointed(conn: Connection, begins: Sequence[tuple[ExecutionId, int, Dispatch]]) -> list[bool]:
    """Which runs the guarded update pointed where asked (each begin has a token of its own)."""
    rows = sqltext.execute(
        conn,
        "SELECT `id`, `status`, `attempt`, `callback_token_hash` FROM `task_executions` "
        f"WHERE `id` IN ({sqltext.ids(run for run, _, _ in begins)})",
    )
    now = {int(i): (s, int(a), h) for i, s, a, h in map(tuple, rows)}
    dispatched = RunStatus.DISPATCHED.value
    return [now.get(run) == (dispatched, attempt, to.token_hash) for run, attempt, to in begins]


def _in_order(conn: Connection, begins: Sequence[tuple[ExecutionId, int, Dispatch]]) -> list[bool]:
    current = _lock(conn, [run for run, _, _ in begins])
    answers = []
    for run, attempt, _ in begins:
        ok = run in current and may_send(*current[run], attempt)
        if ok:
            current[run] = (RunStatus.DISPATCHED, attempt)
        answers.append(ok)
    return answers


def confirm_many(conn: Connection, confirms: Sequence[tuple[ExecutionId, int]]) -> list[bool]:
    """:func:`confirm_dispatch` for many runs, in three statements."""
    if not confirms:
        return []
    current = _lock(conn, [run for run, _ in confirms])
    dispatched = RunStatus.DISPATCHED
    answers = []
    for run, attempt in confirms:  # in order, as one write after another would decide
        ok = current.get(run) == (dispatched, attempt)
        if ok:
            current[run] = (RunStatus.RUNNING, attempt)
        answers.append(ok)
    chosen = [c for c, ok in zip(confirms, answers, strict=True) if ok]
    if chosen:
        ids = sqltext.ids(run for run, _ in chosen)
        pairs = ", ".join([f"({int(run)}, {int(attempt)})" for run, attempt in chosen])
        sqltext.execute(
            conn,
            f"UPDATE `task_executions` SET `status` = '{RunStatus.RUNNING.value}', "
            f"`updated_at` = UTC_TIMESTAMP(3) WHERE `id` IN ({ids})",
        )
        sqltext.execute(
            conn,
            f"UPDATE `execution_attempts` SET `status` = '{RunStatus.RUNNING.value}' "
            f"WHERE (`execution_id`, `attempt`) IN ({pairs}) AND `status` = '{dispatched.value}'",
        )
    return answers


def finish(
    conn: Connection, run: ExecutionId, attempt: int, outcome: Outcome, *, by_leader: bool = False
) -> bool:
    """End the run with ``outcome`` if ``attempt`` is still its current, unfinished attempt."""
    allowed = [s.value for s in sources_of(outcome.status, by_leader=by_leader)]
    values: dict[str, Any] = {
        "status": outcome.status.value,
        "error": outcome.error,
        "result": outcome.result,
        "exit_code": outcome.exit_code,
        "finished_at": outcome.finished_at or _NOW,
        "next_attempt_at": None,
        "updated_at": _NOW,
    }
    if outcome.started_at is not None:
        values["started_at"] = outcome.started_at
    done = conn.execute(
        update(_runs)
        .where(_runs.c.id == run, _runs.c.attempt == attempt, _runs.c.status.in_(allowed))
        .values(**values)
    ).rowcount
    if done:
        _close_attempt(conn, run, attempt, outcome)
    return bool(done)


def schedule_retry(
    conn: Connection, run: ExecutionId, attempt: int, outcome: Outcome, at: datetime
) -> bool:
    """Attempt ``attempt`` ended badly and another is allowed: queue the run again for ``at``."""
    allowed = [s.value for s in sources_of(outcome.status)]
    done = conn.execute(
        update(_runs)
        .where(_runs.c.id == run, _runs.c.attempt == attempt, _runs.c.status.in_(allowed))
        .values(
            status=RunStatus.QUEUED.value,
            error=outcome.error,
            exit_code=outcome.exit_code,
            next_attempt_at=at,
            callback_token_hash=None,
            updated_at=_NOW,
        )
    ).rowcount
    if done:
        _close_attempt(conn, run, attempt, outcome)
    return bool(done)


def give_up_attempt(
    conn: Connection,
    run: ExecutionId,
    attempt: int,
    outcome: Outcome,
    retry_at: datetime | None,
) -> bool:
    """No pod accepted ``attempt``: count it as failed, then queue the run for ``retry_at`` or,
    without one, end it with ``outcome``."""
    values: dict[str, Any] = {
        "attempt": attempt,
        "error": outcome.error,
        "pod_name": None,
        "pod_ip": None,
        "callback_token_hash": None,
        "updated_at": _NOW,
    }
    if retry_at is not None:
        values.update(status=RunStatus.QUEUED.value, next_attempt_at=retry_at)
    else:
        values.update(status=outcome.status.value, next_attempt_at=None, finished_at=_NOW)
    done = conn.execute(update(_runs).where(_sendable(run, attempt)).values(**values)).rowcount
    if done:
        _record_attempt(
            conn,
            run,
            attempt,
            status=outcome.status.value,
            finished_at=_NOW,
            error=outcome.error,
        )
    return bool(done)


def _record_attempt(conn: Connection, run: ExecutionId, attempt: int, **values: Any) -> None:
    """Create the attempt's row, or set ``values`` on the one an earlier try left."""
    stmt = mysql_insert(_attempts).values(
        execution_id=run, attempt=attempt, dispatched_at=_NOW, **values
    )
    conn.execute(stmt.on_duplicate_key_update(**{name: stmt.inserted[name] for name in values}))


def _close_attempt(conn: Connection, run: ExecutionId, attempt: int, outcome: Outcome) -> None:
    conn.execute(
        update(_attempts)
        .where(_attempts.c.execution_id == run, _attempts.c.attempt == attempt)
        .values(
            status=outcome.status.value,
            error=outcome.error,
            finished_at=outcome.finished_at or _NOW,
        )
    )


def open_runs(conn: Connection) -> list[executions.Execution]:
    """Every run not over yet, oldest first (what a new leader picks up)."""
    rows = conn.execute(select(_runs).where(_runs.c.status.in_(_OPEN)).order_by(_runs.c.id))
    return [executions.execution_from_row(row) for row in rows]


def current(
    conn: Connection, runs: Iterable[ExecutionId]
) -> dict[ExecutionId, executions.RunState]:
    """Where each run stands now; only the columns that says (a whole row is 27 columns, its
    result JSON among them, and this is read for every run that changes). Sent as text, its
    rows taken as the driver gives them (times naive UTC)."""
    wanted = list(runs)
    if not wanted:
        return {}
    found = {}
    for run, task, status, attempt, pod, retry_at, deadline in map(
        tuple, sqltext.execute(conn, _CURRENT.format(sqltext.ids(wanted)))
    ):
        key = ExecutionId(int(run))
        found[key] = executions.RunState(
            id=key,
            task=TaskUid(task),
            status=RunStatus(status),
            attempt=int(attempt),
            pod_name=pod,
            next_attempt_at=None if retry_at is None else retry_at.replace(tzinfo=UTC),
            deadline_at=None if deadline is None else deadline.replace(tzinfo=UTC),
        )
    return found


_CURRENT = (
    "SELECT `id`, `task_uid`, `status`, `attempt`, `pod_name`, `next_attempt_at`, "
    "`deadline_at` FROM `task_executions` WHERE `id` IN ({})"
)


def last_ticks(conn: Connection, tasks: Sequence[TaskUid]) -> dict[TaskUid, datetime]:
    """The latest claimed tick of each task (the point from which misfires are counted)."""
    if not tasks:
        return {}
    rows = conn.execute(
        select(_runs.c.task_uid, func.max(_runs.c.scheduled_at))
        .where(_runs.c.task_uid.in_(list(tasks)), _runs.c.scheduled_at.is_not(None))
        .group_by(_runs.c.task_uid)
    )
    return {TaskUid(uid): tick for uid, tick in rows if tick is not None}


def mirrored_tasks(conn: Connection, tasks: Iterable[TaskUid]) -> set[TaskUid]:
    """Which of ``tasks`` have their row in the mirror."""
    uids = list(tasks)
    if not uids:
        return set()
    literal = sqltext.Literals(conn)
    rows = sqltext.execute(
        conn, f"SELECT `uid` FROM `tasks` WHERE `uid` IN ({literal.listing(uids)})"
    )
    return {TaskUid(uid) for (uid,) in map(tuple, rows)}


def attempts(conn: Connection, run: ExecutionId) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(_attempts).where(_attempts.c.execution_id == run).order_by(_attempts.c.attempt)
    )
    return [dict(row._mapping) for row in rows]

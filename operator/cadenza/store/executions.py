"""Execution rows: claiming a tick, and reading the history.

Invariants:

- A run exists once its row exists: :func:`claim_tick` inserts it, and the unique keys
  ``(task_uid, scheduled_at)`` and ``(task_uid, trigger_key)`` turn a second claim of the same
  tick or trigger (by this leader or a later one) into ``None``, never into a second run or an
  error. Runs without a tick or a trigger key (API runs) are never deduplicated.
- Claims are leader writes: call :func:`claim_tick` on a connection from
  :func:`cadenza.store.fencing.leader_transaction`. A duplicate does not spoil that transaction.
- History is paginated by id, newest first: ``after_id`` is the last id of the previous page,
  so rows added meanwhile never shift a page.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, tuple_
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine, Row

from cadenza.core.ids import Epoch, ExecutionId, TaskUid
from cadenza.core.transitions import TERMINAL, RunStatus
from cadenza.store import schema, sqltext

MAX_PAGE = 500
_DUPLICATE_KEY = 1062
_NOW = func.utc_timestamp(3)
_runs = schema.task_executions


class Origin(enum.StrEnum):
    """Why a run exists."""

    SCHEDULE = "schedule"
    """A cron tick, fired on time."""
    MISFIRE = "misfire"
    """A tick missed while no leader ran, fired by the misfire policy."""
    MANUAL = "manual"
    """The ``cadenza.dev/trigger`` annotation."""
    API = "api"
    """The REST API's trigger endpoint."""


@dataclasses.dataclass(frozen=True, slots=True)
class RunState:
    """Where a run stands: the part of its row the leader takes in when the run changed under
    it."""

    id: ExecutionId
    task: TaskUid
    status: RunStatus
    attempt: int
    pod_name: str | None
    next_attempt_at: datetime | None
    deadline_at: datetime | None


@dataclasses.dataclass(frozen=True)
class Execution:
    """One ``task_executions`` row."""

    id: ExecutionId
    task_uid: TaskUid
    namespace: str
    task_name: str
    scheduled_at: datetime | None
    trigger_key: str | None
    origin: Origin
    requested_at: datetime
    status: RunStatus
    attempt: int
    max_attempts: int
    epoch: Epoch
    executor_name: str | None
    pod_name: str | None
    pod_ip: str | None
    callback_token_hash: str | None
    next_attempt_at: datetime | None
    deadline_at: datetime | None
    dispatched_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    result: Any = dataclasses.field(hash=False)
    error: str | None
    exit_code: int | None
    created_at: datetime
    updated_at: datetime


@dataclasses.dataclass(frozen=True)
class HistoryPage:
    """A page of runs, newest first; ``next_after_id`` fetches the next (None: last page)."""

    executions: list[Execution]
    next_after_id: ExecutionId | None


def claim_tick(
    conn: Connection,
    task_uid: TaskUid,
    namespace: str,
    task_name: str,
    scheduled_at: datetime | None,
    origin: Origin,
    *,
    epoch: Epoch,
    max_attempts: int = 1,
    trigger_key: str | None = None,
    status: RunStatus = RunStatus.CLAIMED,
    deadline_at: datetime | None = None,
) -> ExecutionId | None:
    """Insert the run of a tick (or trigger); its id, or None when it was claimed already."""
    if origin in (Origin.SCHEDULE, Origin.MISFIRE) and scheduled_at is None:
        raise ValueError(f"a {origin} run needs its tick (scheduled_at)")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    try:
        result = conn.execute(
            insert(_runs).values(
                task_uid=task_uid,
                namespace=namespace,
                task_name=task_name,
                scheduled_at=scheduled_at,
                trigger_key=trigger_key,
                origin=origin.value,
                requested_at=_NOW,
                status=status.value,
                attempt=1,
                max_attempts=max_attempts,
                epoch=epoch,
                deadline_at=deadline_at,
                # A run decided at claim time (a skipped tick) is over as soon as it exists.
                finished_at=_NOW if status in TERMINAL else None,
                created_at=_NOW,
                updated_at=_NOW,
            )
        )
    except sa_exc.IntegrityError as exc:
        if exc.orig is not None and exc.orig.args and exc.orig.args[0] == _DUPLICATE_KEY:
            return None
        raise
    return ExecutionId(int(result.lastrowid))


@dataclasses.dataclass(frozen=True)
class NewClaim:
    """One run to claim with :func:`claim_many`."""

    task_uid: TaskUid
    namespace: str
    task_name: str
    scheduled_at: datetime | None
    origin: Origin
    status: RunStatus
    max_attempts: int = 1
    trigger_key: str | None = None


def _key(claim: NewClaim) -> tuple[str, str, Any] | None:
    """What deduplicates a claim: its tick, else its trigger key (None: nothing does)."""
    if claim.scheduled_at is not None:
        return ("tick", claim.task_uid, claim.scheduled_at.astimezone(UTC))
    if claim.trigger_key is not None:
        return ("trigger", claim.task_uid, claim.trigger_key)
    return None


def claim_many(conn: Connection, claims: list[NewClaim], epoch: Epoch) -> list[ExecutionId | None]:
    """:func:`claim_tick` for a batch, in one statement whatever its size when none of its ticks
    and triggers was claimed before (a leader's every tick), in three when some were (which
    exist, the insert of the others, their ids).

    Leader writes only (in a fenced transaction): while it lasts no other leader can claim, so
    the ticks found free stay free until the insert. The unique keys still guard it.
    """
    for claim in claims:
        if claim.origin in (Origin.SCHEDULE, Origin.MISFIRE) and claim.scheduled_at is None:
            raise ValueError(f"a {claim.origin} run needs its tick (scheduled_at)")
        if claim.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {claim.max_attempts}")
    keys = [_key(c) for c in claims]
    out: list[ExecutionId | None] = [None] * len(claims)
    for i, key in enumerate(keys):
        if key is None:  # never deduplicated (API runs): one by one, for their ids
            c = claims[i]
            out[i] = claim_tick(
                conn,
                c.task_uid,
                c.namespace,
                c.task_name,
                None,
                c.origin,
                epoch=epoch,
                max_attempts=c.max_attempts,
                status=c.status,
            )
    fresh: list[int] = []
    seen: set[tuple[str, str, Any]] = set()
    for i, key in enumerate(keys):
        if key is not None and key not in seen:
            fresh.append(i)
            seen.add(key)  # a second claim of the same tick in this batch is a duplicate
    if not fresh:
        return out
    try:  # as a rule nothing was claimed before: no need to look first
        ids = _insert(conn, [claims[i] for i in fresh], epoch)
    except sa_exc.IntegrityError as exc:
        if not (exc.orig is not None and exc.orig.args and exc.orig.args[0] == _DUPLICATE_KEY):
            raise
        # InnoDB undid only the failed statement: look, then insert the free ones.
        taken = _existing(conn, [k for k in (keys[i] for i in fresh) if k is not None])
        fresh = [i for i in fresh if keys[i] not in taken]
        ids = _insert(conn, [claims[i] for i in fresh], epoch) if fresh else []
    for i, run in zip(fresh, ids, strict=True):
        out[i] = run
    return out


_CLAIM_COLUMNS = ", ".join(
    f"`{name}`"
    for name in (
        "task_uid",
        "namespace",
        "task_name",
        "scheduled_at",
        "trigger_key",
        "origin",
        "status",
        "attempt",
        "max_attempts",
        "epoch",
        "requested_at",
        "created_at",
        "updated_at",
        "finished_at",
    )
)


def _insert(conn: Connection, claims: list[NewClaim], epoch: Epoch) -> list[ExecutionId]:
    """Insert one run per claim in one statement; their ids, in order. Raises
    ``IntegrityError`` (inserting none) when one was claimed before."""
    literal = sqltext.Literals(conn)
    now = literal.when(datetime.now(UTC))
    fixed = f"{int(epoch)}, {now}, {now}, {now}"
    rows = [
        f"({literal(c.task_uid)}, {literal(c.namespace)}, {literal(c.task_name)}, "
        f"{literal.when(c.scheduled_at)}, {literal(c.trigger_key)}, {literal(c.origin.value)}, "
        f"{literal(c.status.value)}, 1, {int(c.max_attempts)}, {fixed}, "
        # A run decided at claim time (a skipped tick) is over as soon as it exists.
        f"{now if c.status in TERMINAL else 'NULL'})"
        for c in claims
    ]
    sql = f"INSERT INTO `{_runs.name}` ({_CLAIM_COLUMNS}) VALUES {', '.join(rows)}"
    first = int(sqltext.execute(conn, sql).lastrowid)
    step = _id_step(conn)
    if step is not None:
        return [ExecutionId(first + n * step) for n in range(len(claims))]
    found = _ids_of(conn, [k for k in map(_key, claims) if k is not None])
    return [found[k] for k in map(_key, claims) if k is not None]


def _id_step(conn: Connection) -> int | None:
    """How far apart the ids of one multi-row insert are, when the server gives them one
    after the other (``innodb_autoinc_lock_mode`` 0 or 1: MariaDB's and MySQL 5's default);
    None when they may interleave with other inserts' (mode 2, MySQL 8's default), where the
    ids are read back by their keys."""
    if "cadenza_id_step" not in conn.info:
        mode, step = conn.exec_driver_sql(
            "SELECT @@innodb_autoinc_lock_mode, @@auto_increment_increment"
        ).one()
        conn.info["cadenza_id_step"] = int(step) if int(mode) in (0, 1) else None
    step_: int | None = conn.info["cadenza_id_step"]
    return step_


def _existing(conn: Connection, keys: list[tuple[str, str, Any]]) -> set[tuple[str, str, Any]]:
    return set(_ids_of(conn, keys))


def _ids_of(
    conn: Connection, keys: list[tuple[str, str, Any]]
) -> dict[tuple[str, str, Any], ExecutionId]:
    ticks = [(uid, value) for kind, uid, value in keys if kind == "tick"]
    triggers = [(uid, value) for kind, uid, value in keys if kind == "trigger"]
    found: dict[tuple[str, str, Any], ExecutionId] = {}
    if ticks:
        rows = conn.execute(_BY_TICK, {"keys": ticks})
        found.update({("tick", uid, at): ExecutionId(int(i)) for i, uid, at in rows})
    if triggers:
        rows = conn.execute(_BY_TRIGGER, {"keys": triggers})
        found.update({("trigger", uid, key): ExecutionId(int(i)) for i, uid, key in rows})
    return found


# Built once: each tick's claim runs both, and building a tuple IN anew cost more than its rows.
_BY_TICK = select(_runs.c.id, _runs.c.task_uid, _runs.c.scheduled_at).where(
    tuple_(_runs.c.task_uid, _runs.c.scheduled_at).in_(bindparam("keys", expanding=True))
)
_BY_TRIGGER = select(_runs.c.id, _runs.c.task_uid, _runs.c.trigger_key).where(
    tuple_(_runs.c.task_uid, _runs.c.trigger_key).in_(bindparam("keys", expanding=True))
)


def get_execution(engine: Engine, execution_id: ExecutionId) -> Execution | None:
    with engine.connect() as conn:
        row = conn.execute(select(_runs).where(_runs.c.id == execution_id)).one_or_none()
    return None if row is None else execution_from_row(row)


def history(
    engine: Engine,
    namespace: str | None = None,
    task_name: str | None = None,
    status: RunStatus | None = None,
    after_id: ExecutionId | None = None,
    limit: int = 50,
    *,
    task_uid: TaskUid | None = None,
) -> HistoryPage:
    """Runs matching every filter given, newest first, at most ``limit`` (1 to ``MAX_PAGE``)."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    if task_name is not None and namespace is None:
        raise ValueError("filtering by task_name needs the namespace too")
    query = select(_runs).order_by(_runs.c.id.desc()).limit(limit + 1)
    if namespace is not None:
        query = query.where(_runs.c.namespace == namespace)
    if task_name is not None:
        query = query.where(_runs.c.task_name == task_name)
    if task_uid is not None:
        query = query.where(_runs.c.task_uid == task_uid)
    if status is not None:
        query = query.where(_runs.c.status == status.value)
    if after_id is not None:
        query = query.where(_runs.c.id < after_id)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    page = [execution_from_row(row) for row in rows[:limit]]
    more = len(rows) > limit
    return HistoryPage(executions=page, next_after_id=page[-1].id if more else None)


def execution_from_row(row: Row[Any]) -> Execution:
    values = row._asdict()
    return Execution(
        **{
            **values,
            "id": ExecutionId(int(values["id"])),
            "task_uid": TaskUid(values["task_uid"]),
            "origin": Origin(values["origin"]),
            "status": RunStatus(values["status"]),
            "epoch": Epoch(int(values["epoch"])),
        }
    )

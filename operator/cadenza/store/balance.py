"""Each Task's load-balancer state (round-robin cursor, smooth-weight counters, ...).

Persisted so that a new leader continues where the previous one stopped: a round robin does not
restart at the first pod after a failover. A state saved for another strategy is ignored, so
changing a Task's strategy starts it fresh.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.mysql import insert
from sqlalchemy.engine import Connection

from cadenza.core.ids import Epoch, TaskUid
from cadenza.store import schema, sqltext

_state = schema.load_balance_state
_NOW = func.utc_timestamp(3)


def load_many(conn: Connection, wanted: Sequence[tuple[TaskUid, str]]) -> list[dict[str, Any]]:
    """Each Task's state for the strategy asked (``{}`` when none is saved, or one saved for
    another strategy), in one query, in the order asked."""
    if not wanted:
        return []
    rows = conn.execute(
        select(_state.c.task_uid, _state.c.strategy, _state.c.state).where(
            _state.c.task_uid.in_(sorted({task for task, _ in wanted}))
        )
    )
    saved = {task: (strategy, state) for task, strategy, state in rows}
    out: list[dict[str, Any]] = []
    for task, strategy in wanted:
        found, state = saved.get(task, (None, None))
        out.append(dict(state) if found == strategy and isinstance(state, dict) else {})
    return out


def save(
    conn: Connection, task: TaskUid, strategy: str, state: dict[str, Any], epoch: Epoch
) -> None:
    """Upsert (a leader write: call it inside ``fencing.leader_transaction``)."""
    stmt = insert(_state).values(
        task_uid=task, strategy=strategy, state=state, epoch=epoch, updated_at=_NOW
    )
    conn.execute(
        stmt.on_duplicate_key_update(
            strategy=stmt.inserted.strategy,
            state=stmt.inserted.state,
            epoch=stmt.inserted.epoch,
            updated_at=_NOW,
        )
    )


def save_many(
    conn: Connection, states: Mapping[TaskUid, tuple[str, dict[str, Any]]], epoch: Epoch
) -> None:
    """:func:`save` for many Tasks in one statement (each Task's latest state); on the fire
    lane with every batch of dispatches, so written as text (:mod:`cadenza.store.sqltext`)."""
    if not states:
        return
    literal = sqltext.Literals(conn)
    as_json = _state.c.state.type.bind_processor(conn.dialect)
    fixed = f"{int(epoch)}, {literal.when(datetime.now(UTC))}"
    rows = [
        f"({literal(task)}, {literal(strategy)}, "
        f"{literal(state if as_json is None else as_json(state))}, {fixed})"
        for task, (strategy, state) in states.items()
    ]
    sqltext.execute(conn, _SAVE_MANY.format(", ".join(rows)))


_SAVE_MANY = (
    f"INSERT INTO `{_state.name}` (`task_uid`, `strategy`, `state`, `epoch`, `updated_at`) "
    "VALUES {} ON DUPLICATE KEY UPDATE `strategy` = VALUES(`strategy`), "
    "`state` = VALUES(`state`), `epoch` = VALUES(`epoch`), `updated_at` = VALUES(`updated_at`)"
)

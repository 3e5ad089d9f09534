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
from cadenza.store import schema

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
    """:func:`save` for many Tasks in one statement (each Task's latest state)."""
    if not states:
        return
    stmt = insert(_state)
    stmt = stmt.on_duplicate_key_update(
        strategy=stmt.inserted.strategy,
        state=stmt.inserted.state,
        epoch=stmt.inserted.epoch,
        updated_at=stmt.inserted.updated_at,
    )
    now = datetime.now(UTC)
    conn.execute(
        stmt,
        [
            {"task_uid": task, "strategy": s, "state": st, "epoch": epoch, "updated_at": now}
            for task, (s, st) in states.items()
        ],
    )

"""The change log: callbacks applied by any replica note the runs they changed; the leader reads
the log with a cursor (:class:`cadenza.core.changes.ChangeCursor`) to learn of results that
reached another replica, without re-reading its open runs.

Rows are only appended, by the transaction that changed the run, and deleted by the leader in
batches once old.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, or_, select, text
from sqlalchemy.engine import Connection

from cadenza.core.ids import ExecutionId
from cadenza.store import schema, sqltext

_NOW = func.utc_timestamp(3)
_changes = schema.run_changes


def note_change(conn: Connection, run: ExecutionId) -> None:
    """Tell the leader that ``run`` changed (call in the transaction that changed it)."""
    conn.execute(_changes.insert().values(execution_id=run, created_at=_NOW))


def note_changes(conn: Connection, runs: Sequence[ExecutionId]) -> None:
    """:func:`note_change` for many runs, in one statement."""
    if runs:
        rows = ", ".join([f"({int(run)}, UTC_TIMESTAMP(3))" for run in runs])
        sqltext.execute(
            conn, f"INSERT INTO `{_changes.name}` (`execution_id`, `created_at`) VALUES {rows}"
        )


def changes(
    conn: Connection, after: int, gaps: Sequence[int], limit: int
) -> list[tuple[int, ExecutionId]]:
    """Changes with a sequence number above ``after`` or among ``gaps``, oldest first."""
    wanted = _changes.c.seq > after
    if gaps:
        wanted = or_(wanted, _changes.c.seq.in_(list(gaps)))
    rows = conn.execute(
        select(_changes.c.seq, _changes.c.execution_id)
        .where(wanted)
        .order_by(_changes.c.seq)
        .limit(limit)
    )
    return [(int(seq), ExecutionId(int(run))) for seq, run in rows]


def last_change(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(_changes.c.seq), 0))).scalar_one())


def prune_changes(conn: Connection, max_age_seconds: int, batch: int) -> int:
    """Delete up to ``batch`` change rows older than ``max_age_seconds``."""
    old = conn.execute(
        select(_changes.c.seq)
        .where(_changes.c.created_at < _NOW - text(f"INTERVAL {int(max_age_seconds)} SECOND"))
        .order_by(_changes.c.seq)
        .limit(batch)
    ).scalars()
    seqs = list(old)
    if not seqs:
        return 0
    return int(conn.execute(delete(_changes).where(_changes.c.seq.in_(seqs))).rowcount)

"""Epoch fencing: every leader write happens in a transaction that proves the epoch is still ours.

A replica that takes the leader lock bumps its row in ``leader_epochs`` (:data:`BUMP_EPOCH_SQL`,
on the lock's own session) and leads with the new epoch. Each of its writes then runs inside
:func:`leader_transaction`, which first reads the row with a *share lock* and raises
:class:`Fenced` unless the epoch is still the one it leads with.

WARNING: the share lock is what makes this safe, not the comparison alone. A new leader's bump
needs an exclusive lock on the same row, so it waits until every open leader transaction has
ended; a transaction that began before the bump therefore commits before the new epoch exists,
and one that begins after it sees the new epoch and is refused. No write of an old epoch can
land after a new leader took over, even when the old leader was paused for a long time between
its check and its write. Keep leader transactions short: a new leader's bump waits for them, and
gives up after ``innodb_lock_wait_timeout`` (see :mod:`cadenza.store.engine` about sessions a
frozen replica leaves open).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from cadenza.core.ids import Epoch
from cadenza.store import schema

BUMP_EPOCH_SQL = (
    "INSERT INTO leader_epochs (lock_name, epoch, leader_instance, acquired_at) "
    "VALUES (%s, 1, %s, UTC_TIMESTAMP(3)) "
    "ON DUPLICATE KEY UPDATE epoch = epoch + 1, leader_instance = VALUES(leader_instance), "
    "acquired_at = VALUES(acquired_at)"
)
"""The new leader's epoch bump, for a PyMySQL cursor: parameters ``(lock_name, instance_id)``.
Run it in autocommit mode, then read the epoch back on the same session with
``SELECT epoch FROM leader_epochs WHERE lock_name = %s``."""


class Fenced(Exception):
    """The epoch is no longer ours (a newer leader exists, or none ever bumped): step down now.

    Raised before any write of the transaction; everything it did is rolled back.
    """

    def __init__(self, lock_name: str, epoch: Epoch, current: int | None) -> None:
        self.lock_name = lock_name
        self.epoch = epoch
        self.current = current
        super().__init__(
            f"leader epoch {epoch} of lock {lock_name!r} is fenced off: "
            f"the current epoch is {current if current is not None else 'not set'}"
        )


def current_epoch(conn: Connection, lock_name: str) -> Epoch | None:
    """The latest epoch of ``lock_name``, read without locking (for display and checks)."""
    value = conn.execute(
        select(schema.leader_epochs.c.epoch).where(schema.leader_epochs.c.lock_name == lock_name)
    ).scalar_one_or_none()
    return None if value is None else Epoch(int(value))


EPOCH_VARIABLE = "cadenza_epoch"
"""The session variable holding the epoch of the leader transaction in progress."""


@contextlib.contextmanager
def leader_transaction(engine: Engine, lock_name: str, epoch: Epoch) -> Iterator[Connection]:
    """A transaction that commits only the writes of the leader of ``epoch``.

    Yields a connection inside the transaction; commits when the block ends, rolls back when it
    raises. Raises :class:`Fenced` (after rolling back) when ``epoch`` is not the current one.
    """
    with engine.connect() as conn, conn.begin():
        current = conn.execute(
            select(schema.leader_epochs.c.epoch)
            .where(schema.leader_epochs.c.lock_name == lock_name)
            .with_for_update(read=True)
        ).scalar_one_or_none()
        if current is None or int(current) != epoch:
            raise Fenced(lock_name, epoch, None if current is None else int(current))
        # Mirror rows stamp themselves with it (see ``mirror._EPOCH``); cleared below so a
        # pooled session never carries a stale epoch into a write outside a leader transaction.
        conn.exec_driver_sql(f"SET @{EPOCH_VARIABLE} = %s", (int(epoch),))
        try:
            yield conn
        finally:
            conn.exec_driver_sql(f"SET @{EPOCH_VARIABLE} = NULL")

"""The registry of operator replicas (``scheduler_instances``) and who leads.

Each replica writes its own row: it registers at start, heartbeats with its role and epoch, and
forgets itself on a clean shutdown. The leader's heartbeat also corrects the rows of replicas
that died: an older epoch's ``leader`` row becomes ``standby``, and rows silent for long are
pruned (a replica that was only paused registers again). These are not leader writes and are
not fenced. Every time is the database's clock (``UTC_TIMESTAMP(3)``),
so replicas with drifting clocks still compare heartbeats correctly.

Who leads is decided by the named lock alone, never by these rows: :func:`current_leader` asks
the server whether the lock is held and reports the instance of the latest epoch, which may lag
a new leader by the moment between its ``GET_LOCK`` and its epoch bump.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, literal_column, or_, select, update
from sqlalchemy.dialects.mysql import insert
from sqlalchemy.engine import Engine, Row

from cadenza.core.ids import Epoch
from cadenza.store import schema

LEADER = "leader"
STANDBY = "standby"

_NOW = func.utc_timestamp(3)
_replicas = schema.scheduler_instances
_epochs = schema.leader_epochs


@dataclasses.dataclass(frozen=True)
class InstanceInfo:
    """One registered replica."""

    instance_id: str
    host: str
    pid: int
    http_address: str
    role: str
    epoch: Epoch | None
    started_at: datetime
    last_heartbeat: datetime


@dataclasses.dataclass(frozen=True)
class LeaderInfo:
    """The leader of a lock: its latest epoch and, while registered, its replica."""

    lock_name: str
    epoch: Epoch
    instance_id: str
    acquired_at: datetime
    instance: InstanceInfo | None


def register(engine: Engine, instance_id: str, host: str, pid: int, http_address: str) -> None:
    """Add this replica as a standby, or reset its row if the id is registered already."""
    values = {
        "instance_id": instance_id,
        "host": host,
        "pid": pid,
        "http_address": http_address,
        "role": STANDBY,
        "epoch": None,
        "started_at": _NOW,
        "last_heartbeat": _NOW,
    }
    stmt = insert(_replicas).values(values)
    stmt = stmt.on_duplicate_key_update({k: stmt.inserted[k] for k in values if k != "instance_id"})
    with engine.begin() as conn:
        conn.execute(stmt)


def heartbeat(engine: Engine, instance_id: str, role: str, epoch: Epoch | None) -> bool:
    """Record that the replica is alive in ``role``; False when its row is gone (pruned while
    it was paused): register again."""
    if role not in (LEADER, STANDBY):
        raise ValueError(f"role must be {LEADER!r} or {STANDBY!r}, got {role!r}")
    with engine.begin() as conn:
        result = conn.execute(
            update(_replicas)
            .where(_replicas.c.instance_id == instance_id)
            .values(role=role, epoch=epoch, last_heartbeat=_NOW)
        )
        if role == LEADER and epoch is not None:
            # A leader that died (kill -9) never wrote its own row back: an older epoch's
            # ``leader`` row is not true once a newer epoch leads.
            conn.execute(
                update(_replicas)
                .where(
                    _replicas.c.role == LEADER,
                    _replicas.c.instance_id != instance_id,
                    or_(_replicas.c.epoch.is_(None), _replicas.c.epoch < epoch),
                )
                .values(role=STANDBY, epoch=None)
            )
    return result.rowcount > 0


def list_instances(engine: Engine) -> list[InstanceInfo]:
    """Every registered replica, by id."""
    with engine.connect() as conn:
        rows = conn.execute(select(_replicas).order_by(_replicas.c.instance_id)).all()
    return [_instance(row) for row in rows]


def current_leader(engine: Engine, lock_name: str) -> LeaderInfo | None:
    """The leader of ``lock_name``; None while nobody holds the lock or no epoch was written."""
    query = (
        select(
            _epochs,
            func.is_used_lock(lock_name).label("holder"),
            *[c.label(f"r_{c.name}") for c in _replicas.c],
        )
        .select_from(
            _epochs.outerjoin(_replicas, _replicas.c.instance_id == _epochs.c.leader_instance)
        )
        .where(_epochs.c.lock_name == lock_name)
    )
    with engine.connect() as conn:
        row = conn.execute(query).one_or_none()
    if row is None or row.holder is None:
        return None
    instance = None if row.r_instance_id is None else _instance(row, prefix="r_")
    return LeaderInfo(
        lock_name=row.lock_name,
        epoch=Epoch(int(row.epoch)),
        instance_id=row.leader_instance,
        acquired_at=row.acquired_at,
        instance=instance,
    )


def forget(engine: Engine, instance_id: str) -> None:
    """Remove this replica's row (clean shutdown)."""
    with engine.begin() as conn:
        conn.execute(delete(_replicas).where(_replicas.c.instance_id == instance_id))


def prune(engine: Engine, older_than: timedelta) -> int:
    """Remove replicas whose last heartbeat is older than ``older_than``; how many."""
    micros = int(older_than.total_seconds() * 1_000_000)
    if micros <= 0:
        raise ValueError(f"older_than must be positive, got {older_than}")
    cutoff = func.timestampadd(literal_column("MICROSECOND"), -micros, _NOW)
    with engine.begin() as conn:
        result = conn.execute(delete(_replicas).where(_replicas.c.last_heartbeat < cutoff))
    return result.rowcount


def _instance(row: Row[Any], prefix: str = "") -> InstanceInfo:
    def get(name: str) -> Any:
        return getattr(row, prefix + name)

    epoch = get("epoch")
    return InstanceInfo(
        instance_id=get("instance_id"),
        host=get("host"),
        pid=get("pid"),
        http_address=get("http_address"),
        role=get("role"),
        epoch=None if epoch is None else Epoch(int(epoch)),
        started_at=get("started_at"),
        last_heartbeat=get("last_heartbeat"),
    )

"""``executor_heartbeats``: the last heartbeat of each executor outside the cluster, and which
Executor its instance id belongs to.

Written by any replica's REST API (registration and heartbeats: one row per instance, one
statement per heartbeat, no leader fencing: a heartbeat is a fact about the executor, not leader
state), read by the leader's pool when it probes an endpoint.

Invariants:
- An instance id belongs to at most one Executor per namespace: :func:`record` never moves a
  row to another Executor, it answers the owner instead, and the caller refuses (409).
- Times are aware UTC datetimes from the writing replica's clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.mysql import insert
from sqlalchemy.engine import Engine

from cadenza.store import schema

_beats = schema.executor_heartbeats


def owner(engine: Engine, namespace: str, instance_id: str) -> str | None:
    """The name of the Executor the instance id belongs to, if it has a row."""
    with engine.connect() as conn:
        found = conn.execute(
            select(_beats.c.executor_name).where(
                _beats.c.namespace == namespace, _beats.c.instance_id == instance_id
            )
        ).scalar_one_or_none()
    return None if found is None else str(found)


def record(engine: Engine, namespace: str, instance_id: str, executor: str, at: datetime) -> str:
    """A heartbeat of ``instance_id`` of ``executor`` at ``at``, unless the instance id belongs
    to another Executor; the owner after the call (``executor`` when it was recorded)."""
    with engine.begin() as conn:
        conn.execute(
            insert(_beats)
            .prefix_with("IGNORE")
            .values(
                namespace=namespace, instance_id=instance_id, executor_name=executor, beat_at=at
            )
        )
        conn.execute(
            update(_beats)
            .where(
                _beats.c.namespace == namespace,
                _beats.c.instance_id == instance_id,
                _beats.c.executor_name == executor,
            )
            .values(beat_at=at)
        )
        found = conn.execute(
            select(_beats.c.executor_name).where(
                _beats.c.namespace == namespace, _beats.c.instance_id == instance_id
            )
        ).scalar_one()
    return str(found)


def forget(engine: Engine, namespace: str, instance_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            delete(_beats).where(
                _beats.c.namespace == namespace, _beats.c.instance_id == instance_id
            )
        )


def last_beats(
    engine: Engine, namespace: str, executor: str, instance_ids: Sequence[str]
) -> dict[str, datetime]:
    """The last heartbeat of each of the Executor's instances that has one."""
    if not instance_ids:
        return {}
    with engine.connect() as conn:
        found = conn.execute(
            select(_beats.c.instance_id, _beats.c.beat_at).where(
                _beats.c.namespace == namespace,
                _beats.c.executor_name == executor,
                _beats.c.instance_id.in_(list(instance_ids)),
            )
        ).all()
    return {str(row.instance_id): row.beat_at for row in found}


def namespace_beats(engine: Engine, namespace: str) -> dict[tuple[str, str], datetime]:
    """The last heartbeat of every instance of the namespace, by (Executor name, instance id)."""
    with engine.connect() as conn:
        found = conn.execute(
            select(_beats.c.executor_name, _beats.c.instance_id, _beats.c.beat_at).where(
                _beats.c.namespace == namespace
            )
        ).all()
    return {(str(row.executor_name), str(row.instance_id)): row.beat_at for row in found}

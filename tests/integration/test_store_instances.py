"""The replica registry: registration, heartbeats, pruning, and who leads (lock held + epoch)."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from cadenza.core.ids import Epoch
from cadenza.devenv import mariadb
from cadenza.store import fencing, instances, schema
from tests.support import wait_for

pytestmark = pytest.mark.mariadb


def test_a_replica_registers_heartbeats_and_forgets_itself(engine: Engine) -> None:
    instances.register(engine, "replica-a", "node-1", 41, "10.0.0.7:8080")
    instances.register(engine, "replica-b", "node-2", 42, "10.0.0.8:8080")
    (a, b) = instances.list_instances(engine)
    assert (a.instance_id, a.host, a.pid, a.http_address) == (
        "replica-a",
        "node-1",
        41,
        "10.0.0.7:8080",
    )
    assert (a.role, a.epoch) == (instances.STANDBY, None)
    assert a.last_heartbeat.tzinfo is not None and a.last_heartbeat >= a.started_at

    assert instances.heartbeat(engine, "replica-b", instances.LEADER, Epoch(3)) is True
    b = instances.list_instances(engine)[1]
    assert (b.role, b.epoch) == (instances.LEADER, 3)

    instances.forget(engine, "replica-a")
    assert [i.instance_id for i in instances.list_instances(engine)] == ["replica-b"]
    assert instances.heartbeat(engine, "replica-a", instances.STANDBY, None) is False


def test_a_newer_leader_corrects_the_row_of_one_that_died(engine: Engine) -> None:
    for name in ("dead", "next", "paused"):
        instances.register(engine, name, "node", 1, "10.0.0.1:8080")
    instances.heartbeat(engine, "dead", instances.LEADER, Epoch(4))
    instances.heartbeat(engine, "next", instances.LEADER, Epoch(5))
    roles = {i.instance_id: (i.role, i.epoch) for i in instances.list_instances(engine)}
    assert roles == {"dead": ("standby", None), "next": ("leader", 5), "paused": ("standby", None)}
    # An old leader that wakes up and still believes it leads cannot demote the newer one.
    instances.heartbeat(engine, "paused", instances.LEADER, Epoch(3))
    assert {i.instance_id: i.role for i in instances.list_instances(engine)}["next"] == "leader"
    instances.heartbeat(engine, "next", instances.LEADER, Epoch(5))
    leaders = [i.instance_id for i in instances.list_instances(engine) if i.role == "leader"]
    assert leaders == ["next"]


def test_registering_again_resets_the_row(engine: Engine) -> None:
    instances.register(engine, "replica-a", "node-1", 41, "10.0.0.7:8080")
    instances.heartbeat(engine, "replica-a", instances.LEADER, Epoch(1))
    instances.register(engine, "replica-a", "node-1", 99, "10.0.0.9:8080")
    (a,) = instances.list_instances(engine)
    assert (a.pid, a.http_address, a.role, a.epoch) == (99, "10.0.0.9:8080", "standby", None)


def test_a_heartbeat_refuses_an_unknown_role(engine: Engine) -> None:
    with pytest.raises(ValueError, match="role"):
        instances.heartbeat(engine, "replica-a", "boss", None)


def test_prune_removes_replicas_silent_for_too_long(engine: Engine) -> None:
    for name in ("alive", "dead"):
        instances.register(engine, name, "node", 1, "10.0.0.1:8080")
    with engine.begin() as conn:
        conn.execute(
            sa.update(schema.scheduler_instances)
            .where(schema.scheduler_instances.c.instance_id == "dead")
            .values(last_heartbeat=sa.text("UTC_TIMESTAMP(3) - INTERVAL 2 MINUTE"))
        )

    assert instances.prune(engine, timedelta(seconds=60)) == 1

    assert [i.instance_id for i in instances.list_instances(engine)] == ["alive"]
    with pytest.raises(ValueError, match="positive"):
        instances.prune(engine, timedelta(0))


def test_the_leader_is_the_lock_holder_of_the_latest_epoch(
    engine: Engine, mariadb_server: mariadb.Server, database: str
) -> None:
    # Lock names are global to the server: make this test's unique.
    lock = f"cadenza-test-{secrets.token_hex(6)}"
    assert instances.current_leader(engine, lock) is None
    instances.register(engine, "replica-b", "node-2", 42, "10.0.0.8:8080")

    session = mariadb_server.connect(make_url(database).database)
    try:
        with session.cursor() as cur:
            cur.execute(fencing.BUMP_EPOCH_SQL, (lock, "replica-a"))
            cur.execute(fencing.BUMP_EPOCH_SQL, (lock, "replica-b"))
        assert instances.current_leader(engine, lock) is None, "nobody holds the lock"

        with session.cursor() as cur:
            cur.execute("SELECT GET_LOCK(%s, 0)", (lock,))
        leader = instances.current_leader(engine, lock)
        assert leader is not None
        assert (leader.instance_id, leader.epoch) == ("replica-b", 2)
        assert leader.instance is not None and leader.instance.http_address == "10.0.0.8:8080"

        instances.forget(engine, "replica-b")
        unregistered = instances.current_leader(engine, lock)
        assert unregistered is not None and unregistered.instance is None
    finally:
        session.close()

    wait_for(
        lambda: instances.current_leader(engine, lock) is None,
        10,
        "the lock to die with its session",
    )

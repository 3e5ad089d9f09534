"""Epoch fencing: only the current leader's transactions commit, and a new leader's epoch bump
waits for an old leader's open transaction, so no old-epoch write lands after the takeover."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from sqlalchemy.engine import Engine, make_url

from cadenza.core.ids import Epoch
from cadenza.devenv import mariadb
from cadenza.store import fencing, mirror, mirror_reads
from cadenza.store.mirror_rows import ExecutorRow
from tests.support import wait_for

pytestmark = pytest.mark.mariadb

LOCK = "cadenza-leader"


@pytest.fixture
def lock_session(
    mariadb_server: mariadb.Server, database: str
) -> Iterator[pymysql.connections.Connection[Any]]:
    """A raw autocommit session like the leader lock's, where the epoch bump is issued."""
    conn = mariadb_server.connect(make_url(database).database)
    yield conn
    conn.close()


def bump(session: pymysql.connections.Connection[Any], instance: str = "replica-a") -> Epoch:
    with session.cursor() as cur:
        cur.execute(fencing.BUMP_EPOCH_SQL, (LOCK, instance))
        cur.execute("SELECT epoch FROM leader_epochs WHERE lock_name = %s", (LOCK,))
        row = cur.fetchone()
    assert row is not None
    return Epoch(int(row[0]))


def executor(name: str) -> ExecutorRow:
    return ExecutorRow(
        uid=f"00000000-0000-0000-0000-{abs(hash(name)) % 10**12:012d}",
        namespace="ns",
        name=name,
        selector={"matchLabels": {"app": name}},
        port=9090,
        scheme="http",
        spec={"selector": {"matchLabels": {"app": name}}},
        spec_hash=name.ljust(64, "0")[:64],
        generation=1,
    )


def names(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [row.name for row in mirror_reads.read_executors(conn)]


def test_the_current_epoch_commits(engine: Engine, lock_session: Any) -> None:
    epoch = bump(lock_session)
    assert epoch == 1

    with fencing.leader_transaction(engine, LOCK, epoch) as conn:
        mirror.upsert_executor(conn, executor("pool"))

    assert names(engine) == ["pool"]


def test_an_old_epoch_is_fenced_and_writes_nothing(engine: Engine, lock_session: Any) -> None:
    old = bump(lock_session, "replica-a")
    assert bump(lock_session, "replica-b") == old + 1
    ran = False

    with (
        pytest.raises(fencing.Fenced, match=r"epoch 1 .* current epoch is 2") as e,
        fencing.leader_transaction(engine, LOCK, old) as conn,
    ):
        ran = True
        mirror.upsert_executor(conn, executor("pool"))

    assert not ran
    assert (e.value.epoch, e.value.current) == (1, 2)
    assert names(engine) == []


def test_without_any_epoch_every_write_is_fenced(engine: Engine) -> None:
    with (
        pytest.raises(fencing.Fenced, match="not set"),
        fencing.leader_transaction(engine, LOCK, Epoch(1)),
    ):
        pass


def test_an_error_inside_rolls_back_every_write(engine: Engine, lock_session: Any) -> None:
    epoch = bump(lock_session)

    with (
        pytest.raises(RuntimeError, match="boom"),
        fencing.leader_transaction(engine, LOCK, epoch) as conn,
    ):
        mirror.upsert_executor(conn, executor("pool"))
        raise RuntimeError("boom")

    assert names(engine) == []


def test_a_bump_waits_for_an_open_transaction_of_the_old_epoch(
    engine: Engine, lock_session: Any, mariadb_server: mariadb.Server, database: str
) -> None:
    old = bump(lock_session, "replica-a")
    new_leader = mariadb_server.connect(make_url(database).database)
    bumped_at: list[float] = []

    def take_over() -> None:
        bump(new_leader, "replica-b")
        bumped_at.append(time.monotonic())

    try:
        with fencing.leader_transaction(engine, LOCK, old) as conn:
            mirror.upsert_executor(conn, executor("written-by-old-leader"))
            taker = threading.Thread(target=take_over)
            taker.start()
            wait_for(
                lambda: lock_waits(engine, new_leader.thread_id()),
                10,
                "the new leader's bump to wait for the row lock",
            )
            # The old leader is paused here, as long as it likes: the bump keeps waiting.
            assert bumped_at == []
            committed_before = time.monotonic()
        taker.join(10)
    finally:
        new_leader.close()

    assert bumped_at and bumped_at[0] > committed_before
    assert names(engine) == ["written-by-old-leader"]
    with engine.connect() as conn:
        assert fencing.current_epoch(conn, LOCK) == old + 1
    with (
        pytest.raises(fencing.Fenced),
        fencing.leader_transaction(engine, LOCK, old) as conn,
    ):
        mirror.upsert_executor(conn, executor("too-late"))
    assert names(engine) == ["written-by-old-leader"]


def lock_waits(engine: Engine, connection_id: int) -> bool:
    with engine.connect() as conn:
        state = conn.exec_driver_sql(
            "SELECT trx_state FROM information_schema.innodb_trx WHERE trx_mysql_thread_id = %s",
            (connection_id,),
        ).scalar_one_or_none()
    return state == "LOCK WAIT"

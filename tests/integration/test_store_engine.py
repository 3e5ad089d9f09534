"""The pooled engine's session settings, UTC datetimes, and the start-up check's messages."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from cadenza.store import engine as engines
from cadenza.store import migrations, schema

pytestmark = pytest.mark.mariadb


@pytest.fixture
def engine(database: str) -> Iterator[Engine]:
    eng = engines.create_engine(database, pool_size=2, session_wait_timeout=30)
    migrations.migrate(eng)
    yield eng
    assert eng.pool.checkedout() == 0, "a test leaked a pooled connection"  # type: ignore[attr-defined]
    eng.dispose()


def test_sessions_are_utc_strict_and_read_committed(engine: Engine) -> None:
    with engine.connect() as conn:
        tz, mode, isolation, wait, charset = conn.exec_driver_sql(
            "SELECT @@time_zone, @@sql_mode, @@tx_isolation, @@wait_timeout, "
            "@@character_set_connection"
        ).one()
    assert tz == "+00:00"
    assert "STRICT_ALL_TABLES" in mode.split(",")
    assert isolation == "READ-COMMITTED"
    assert wait == 30
    assert charset == "utf8mb4"


def test_a_value_too_long_is_refused_not_truncated(engine: Engine) -> None:
    with pytest.raises(sa.exc.DataError, match="too long"), engine.begin() as conn:
        conn.execute(
            schema.leader_epochs.insert().values(
                lock_name="x" * 65,
                epoch=1,
                leader_instance="a",
                acquired_at=datetime.now(UTC),
            )
        )


def test_datetimes_are_stored_as_utc_and_read_back_aware(engine: Engine) -> None:
    berlin_summer = timezone(timedelta(hours=2))
    written = datetime(2025, 7, 1, 14, 30, 15, 123456, tzinfo=berlin_summer)
    with engine.begin() as conn:
        conn.execute(
            schema.leader_epochs.insert().values(
                lock_name="l", epoch=1, leader_instance="a", acquired_at=written
            )
        )
    with engine.connect() as conn:
        aware = conn.execute(sa.select(schema.leader_epochs.c.acquired_at)).scalar_one()
        raw = conn.exec_driver_sql("SELECT acquired_at FROM leader_epochs").scalar_one()
    assert aware == datetime(2025, 7, 1, 12, 30, 15, 123000, tzinfo=UTC)
    assert aware.tzinfo is UTC
    assert raw == datetime(2025, 7, 1, 12, 30, 15, 123000)


def test_a_naive_datetime_is_refused(engine: Engine) -> None:
    with pytest.raises(sa.exc.StatementError, match="naive datetime"), engine.begin() as conn:
        conn.execute(
            schema.leader_epochs.insert().values(
                lock_name="l", epoch=1, leader_instance="a", acquired_at=datetime(2025, 1, 1)
            )
        )


def test_check_returns_the_server_version(engine: Engine) -> None:
    assert "MariaDB" in engines.check(engine)


def test_check_names_a_wrong_password(database: str) -> None:
    url = make_url(database).set(password="wrong-password")
    eng = engines.create_engine(url, pool_size=1)
    try:
        with pytest.raises(engines.DatabaseUnavailable, match="access denied") as e:
            engines.check(eng)
    finally:
        eng.dispose()
    assert "127.0.0.1:3306" in str(e.value)
    assert url.database is not None and url.database in str(e.value)
    assert "wrong-password" not in str(e.value)
    assert e.value.permanent


def test_check_names_an_unknown_database(database: str) -> None:
    url = make_url(database).set(database="cadenza_no_such_db")
    eng = engines.create_engine(url, pool_size=1)
    try:
        with pytest.raises(engines.DatabaseUnavailable, match="does not exist") as e:
            engines.check(eng)
    finally:
        eng.dispose()
    assert "CREATE DATABASE `cadenza_no_such_db`" in str(e.value)
    assert e.value.permanent


def test_check_names_an_unreachable_server(database: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    url = make_url(database).set(port=free_port)
    eng = engines.create_engine(url, pool_size=1, connect_timeout=2)
    try:
        with pytest.raises(engines.DatabaseUnavailable, match="unreachable") as e:
            engines.check(eng)
    finally:
        eng.dispose()
    assert f"127.0.0.1:{free_port}" in str(e.value)
    assert e.value.address == f"127.0.0.1:{free_port}"
    assert not e.value.permanent, "a server that is down may come up: worth retrying"


def session_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one())


def test_a_connection_in_steady_use_is_kept_past_half_the_wait_timeout(database: str) -> None:
    """No recycling by age: the pool would otherwise reconnect every few seconds under load."""
    eng = engines.create_engine(database, pool_size=1, session_wait_timeout=2)
    try:
        first = session_id(eng)
        until = time.monotonic() + 2.5  # past the server's wait_timeout, in steady use
        while time.monotonic() < until:
            assert session_id(eng) == first
            time.sleep(0.2)  # the pause between two uses, well under the 1 s idle limit
    finally:
        eng.dispose()


def test_a_connection_idle_past_half_the_wait_timeout_is_replaced_before_use(
    database: str,
) -> None:
    eng = engines.create_engine(database, pool_size=1, session_wait_timeout=2)
    try:
        first = session_id(eng)
        time.sleep(1.3)  # idle over the limit (1 s), under the server's wait_timeout
        second = session_id(eng)
        assert second != first
        time.sleep(3)  # idle until the server dropped it: still usable
        assert session_id(eng) not in (first, second)
    finally:
        eng.dispose()

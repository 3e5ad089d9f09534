"""The election thread against the real MariaDB: acquire, fence, step down, never stack the lock."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import make_url

from cadenza.leadership import Leadership, LeaderState, lock_connect_args
from cadenza.settings import LeadershipSettings
from cadenza.store import engine as store_engine
from cadenza.store import migrations
from tests.support import db, wait_for

LOCK = "cadenza.test.lock"


class Recorder:
    def __init__(self) -> None:
        self.states: list[LeaderState] = []
        self._lock = threading.Lock()

    def __call__(self, state: LeaderState) -> None:
        with self._lock:
            self.states.append(state)


@pytest.fixture
def migrated(database: str) -> str:
    migrations.migrate(database)
    return database


@pytest.fixture
def election(migrated: str) -> Iterator[tuple[Leadership, Recorder]]:
    recorder = Recorder()
    leadership = Leadership(
        LeadershipSettings(lock_name=LOCK, lease_seconds=6, acquire_timeout_seconds=1),
        migrated,
        "solo",
        recorder,
    )
    leadership.start()
    yield leadership, recorder
    leadership.stop()


def test_leads_with_a_bumped_epoch_and_a_valid_lease(
    election: tuple[Leadership, Recorder], migrated: str
) -> None:
    leadership, _ = election
    wait_for(lambda: leadership.state.leading, 20, "leadership")
    assert leadership.lease_valid()
    assert leadership.state.epoch == db.scalar(
        migrated, "SELECT epoch FROM leader_epochs WHERE lock_name = %s", LOCK
    )
    assert db.scalar(migrated, "SELECT IS_USED_LOCK(%s)", LOCK) == leadership.state.connection_id


def test_stepping_down_never_stacks_the_lock(
    election: tuple[Leadership, Recorder], migrated: str
) -> None:
    """Regression: GET_LOCK again on a session that holds the lock would hold it twice, and the
    RELEASE_LOCK at shutdown would leave it held forever."""
    leadership, recorder = election
    wait_for(lambda: leadership.state.leading, 20, "leadership")
    first = leadership.state
    for _ in range(3):
        previous = leadership.state
        leadership.step_down()
        wait_for(
            lambda p=previous: leadership.state.leading and leadership.state != p,
            20,
            "leadership again",
        )
        assert leadership.state.connection_id != previous.connection_id
        assert leadership.state.epoch is not None and previous.epoch is not None
        assert leadership.state.epoch > previous.epoch
    assert leadership.acquisitions == 4
    assert first.connection_id not in {s.connection_id for s in recorder.states[-1:]}
    leadership.stop()
    assert not leadership.state.leading
    # One release freed it completely: the lock is not stacked on any session.
    assert db.scalar(migrated, "SELECT IS_FREE_LOCK(%s)", LOCK) == 1


def test_a_foreign_epoch_makes_the_leader_step_down(
    election: tuple[Leadership, Recorder], migrated: str
) -> None:
    leadership, recorder = election
    wait_for(lambda: leadership.state.leading, 20, "leadership")
    epoch = leadership.state.epoch
    assert epoch is not None
    db.scalar(migrated, "UPDATE leader_epochs SET epoch = epoch + 100 WHERE lock_name = %s", LOCK)
    wait_for(lambda: any(not s.leading for s in recorder.states[1:]), 20, "a step-down")
    wait_for(lambda: leadership.state.leading, 20, "leadership again")
    assert leadership.state.epoch is not None and leadership.state.epoch > epoch + 100


def test_refuses_to_lead_with_a_skewed_clock(migrated: str) -> None:
    recorder = Recorder()
    # A bound below any real round trip stands in for a clock that is off.
    leadership = Leadership(
        LeadershipSettings(
            lock_name=LOCK,
            lease_seconds=6,
            acquire_timeout_seconds=1,
            max_clock_skew_seconds=0.0000001,
        ),
        migrated,
        "skewed",
        recorder,
    )
    leadership.start()
    try:
        # The thread connects, measures, refuses and backs off; the lock stays free.
        wait_for(lambda: "clock" in (leadership.last_error or ""), 20, "a refusal")
        assert not leadership.state.leading
        assert db.scalar(migrated, "SELECT IS_FREE_LOCK(%s)", LOCK) == 1
    finally:
        leadership.stop()
    assert recorder.states == []


def test_the_lock_connection_honours_the_dsn_options_of_the_pool(migrated: str) -> None:
    """A DSN naming a unix socket (and a host nobody resolves, which the socket overrides) leads
    as the pool connects: the lock's session is not opened from host and port alone."""
    socket_path = db.scalar(migrated, "SELECT @@socket")
    url = make_url(migrated).set(host="no-such-host.invalid", port=None)
    dsn = url.update_query_dict({"unix_socket": socket_path}).render_as_string(hide_password=False)
    engine = store_engine.create_engine(dsn, pool_size=1)
    try:
        with engine.connect() as conn:  # the pool reaches the server this way
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        engine.dispose()
    recorder = Recorder()
    settings = LeadershipSettings(lock_name=LOCK, lease_seconds=6, acquire_timeout_seconds=1)
    leadership = Leadership(settings, dsn, "over-the-socket", recorder)
    leadership.start()
    try:
        wait_for(lambda: leadership.state.leading, 20, f"leadership ({leadership.last_error})")
    finally:
        leadership.stop()


def test_lock_connect_args_keep_tls_and_socket_options_but_not_timeouts() -> None:
    url = make_url(
        "mysql+pymysql://u:p%40ss@db:3307/jobs?ssl_ca=/ca.pem&unix_socket=/s.sock&read_timeout=1"
    )
    args = lock_connect_args(url)
    assert args["ssl"] == {"ca": "/ca.pem"} and args["unix_socket"] == "/s.sock"
    assert (args["host"], args["port"], args["password"]) == ("db", 3307, "p@ss")
    assert "read_timeout" not in args

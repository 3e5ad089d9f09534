"""Leader election with MySQL ``GET_LOCK`` and epoch fencing.

One dedicated PyMySQL connection, outside any pool, carries the lock: no pre-ping, no automatic
reconnect, connect/read/write timeouts set, and ``wait_timeout = L`` so that the server frees the
lock of a frozen leader (SIGSTOP, a stuck VM) about L seconds after its last heartbeat. All of it
runs in a thread of its own, never on the event loop, so a busy or blocked loop cannot delay the
heartbeat.

- Followers block in ``GET_LOCK(name, short_timeout)`` and try again until they get it.
- The new leader bumps ``leader_epochs`` on the lock's own session; every leader write elsewhere
  is conditional on that epoch (see ``cadenza.store.fencing``), so a write of an old leader that
  resumes after a pause is refused by the database itself.
- Every L/3 the heartbeat checks ``IS_USED_LOCK(name) = CONNECTION_ID()`` and that the epoch row
  is still ours. :meth:`Leadership.lease_valid` says whether the last good heartbeat is recent
  enough (L minus a margin, on the monotonic clock) to keep acting as leader.
- Any doubt (error, lost lock, foreign epoch) means step down at once: report it, close the
  connection (which releases the lock) and queue for the lock again on a new connection.
- A replica whose clock differs from the database's by more than the bound refuses to lead.

WARNING: ``GET_LOCK`` is never called twice on one session. MySQL/MariaDB locks stack: a session
that calls it again while holding the lock holds it twice and one ``RELEASE_LOCK`` no longer frees
it. Each connection therefore calls ``GET_LOCK`` until it succeeds once, and is closed when its
leadership ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pymysql
from sqlalchemy.dialects.mysql.pymysql import MySQLDialect_pymysql
from sqlalchemy.engine import URL, make_url

from cadenza.core.ids import Epoch
from cadenza.settings import LeadershipSettings

log = logging.getLogger(__name__)


_TIMEOUTS = ("connect_timeout", "read_timeout", "write_timeout", "autocommit")


def lock_connect_args(url: URL) -> dict[str, Any]:
    """What the lock's connection is opened with: the pool's own reading of the DSN (host or
    ``unix_socket``, ``ssl_*``, ``charset``, as SQLAlchemy's PyMySQL dialect reads them), without
    the timeouts, which the lease decides here."""
    _, kwargs = MySQLDialect_pymysql().create_connect_args(url)
    return {k: v for k, v in kwargs.items() if k not in _TIMEOUTS}


class ClockSkewError(RuntimeError):
    """The local clock and the database's disagree by more than the configured bound."""


@dataclasses.dataclass(frozen=True)
class LeaderState:
    """What the election thread last concluded; ``epoch`` is set only while leading."""

    leading: bool
    epoch: Epoch | None = None
    connection_id: int | None = None


@dataclasses.dataclass
class StepDowns:
    """How long a replica whose leader work failed waits before it campaigns again, so another
    replica gets the lock first: doubling with each failure in a row, up to ``most`` seconds,
    and from the start again after a term that lasted ``healthy_term`` seconds."""

    healthy_term: float = 60.0
    most: float = 60.0
    failures: int = 0

    def after_failure(self, term_seconds: float) -> float:
        """The cooldown after a term of ``term_seconds`` that ended in a failure."""
        if term_seconds >= self.healthy_term:
            self.failures = 0
        self.failures += 1
        return min(2.0**self.failures, self.most)


class Leadership:
    """The election thread of one replica; see the module docstring for the protocol."""

    def __init__(
        self,
        settings: LeadershipSettings,
        database_url: str,
        instance_id: str,
        on_change: Callable[[LeaderState], None],
        connect_timeout: float = 5.0,
    ) -> None:
        self._settings = settings
        self._url = make_url(database_url)
        self._instance_id = instance_id
        self._on_change = on_change
        self._connect_timeout = connect_timeout
        self._stop = threading.Event()
        self._abdicate = threading.Event()
        self._cooldown = 0.0
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._state = LeaderState(leading=False)
        self._last_good_heartbeat = float("-inf")
        self._conn: pymysql.connections.Connection[Any] | None = None
        self.acquisitions = 0
        """How many times this replica took the lead (for tests and metrics)."""
        self.last_error: str | None = None
        """Why the last campaign ended, if it ended in an error (for probes and tests)."""

    # -- public, thread-safe ------------------------------------------------------------------

    @property
    def state(self) -> LeaderState:
        with self._lock:
            return self._state

    def lease_valid(self) -> bool:
        """True while leading and the last good heartbeat is recent enough to act on."""
        with self._lock:
            if not self._state.leading:
                return False
            horizon = self._settings.lease_seconds - self._settings.safety_margin_seconds
            return time.monotonic() < self._last_good_heartbeat + horizon

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cadenza-leadership", daemon=True)
        self._thread.start()

    def stop_soon(self) -> None:
        """Stop campaigning without waiting: the election thread stops leading and releases the
        lock at once (safe from a signal handler; nothing here blocks)."""
        self._stop.set()
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop campaigning; a leader releases the lock so a follower takes over at once."""
        self.stop_soon()
        if self._thread is not None:
            self._thread.join(timeout)

    def step_down(self, cooldown: float = 0.0) -> None:
        """Stop leading now; the election thread closes the lock's connection and queues again
        after ``cooldown`` seconds (leader work that failed gives the others a chance first)."""
        if self.state.leading:
            self._cooldown = cooldown
            self._set_state(LeaderState(leading=False))
            self._abdicate.set()
            self._wake.set()

    # -- the election thread -----------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._campaign()
                backoff = 0.5
            except ClockSkewError as exc:
                self.last_error = f"refusing to lead: {exc}"
                log.error("%s", self.last_error)
            except pymysql.MySQLError as exc:
                self.last_error = f"leader lock connection failed: {exc}"
                log.warning("%s", self.last_error)
            except Exception as exc:
                self.last_error = f"leader election failed: {exc!r}"
                log.exception("leader election failed unexpectedly")
            finally:
                self._set_state(LeaderState(leading=False))
                self._close()
            pause, self._cooldown = max(backoff, self._cooldown), 0.0
            self._stop.wait(pause)
            backoff = min(backoff * 2, 10.0)

    def _campaign(self) -> None:
        conn = self._connect()
        self._check_clock(conn)
        name = self._settings.lock_name
        while not self._stop.is_set():
            if self._query_one(conn, "SELECT GET_LOCK(%s, %s)", (name, self._acquire_timeout)) == 1:
                break
        else:
            return
        epoch = self._bump_epoch(conn)
        connection_id = int(self._query_one(conn, "SELECT CONNECTION_ID()"))
        with self._lock:
            self._last_good_heartbeat = time.monotonic()
        self.acquisitions += 1
        log.info("leading with epoch %s (lock session %s)", epoch, connection_id)
        self._set_state(LeaderState(leading=True, epoch=epoch, connection_id=connection_id))
        interval = self._settings.lease_seconds / 3
        while True:
            self._wake.wait(interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            if self._abdicate.is_set():
                self._abdicate.clear()
                log.warning("fenced out of epoch %s; stepping down", epoch)
                return
            if not self._heartbeat(conn, epoch):
                log.warning("lost the leader lock or epoch %s; stepping down", epoch)
                return
        # Nothing may act as leader once the lock is free: stop leading first.
        self._set_state(LeaderState(leading=False))
        with contextlib.suppress(pymysql.MySQLError):
            self._query_one(conn, "SELECT RELEASE_LOCK(%s)", (name,))
        log.info("released the leader lock")

    @property
    def _acquire_timeout(self) -> int:
        return self._settings.acquire_timeout_seconds

    def _connect(self) -> pymysql.connections.Connection[Any]:
        conn = pymysql.connect(
            **lock_connect_args(self._url),
            connect_timeout=self._connect_timeout,
            read_timeout=self._acquire_timeout + 5,
            write_timeout=5,
            autocommit=True,
        )
        self._conn = conn
        with conn.cursor() as cur:
            cur.execute("SET SESSION wait_timeout = %s", (self._settings.lease_seconds,))
        return conn

    def _check_clock(self, conn: pymysql.connections.Connection[Any]) -> None:
        before = time.time()
        db_now = float(self._query_one(conn, "SELECT UNIX_TIMESTAMP(NOW(6))"))
        after = time.time()
        skew = abs(db_now - (before + after) / 2)
        if skew > self._settings.max_clock_skew_seconds:
            raise ClockSkewError(
                f"local clock differs from the database's by {skew:.2f}s "
                f"(bound {self._settings.max_clock_skew_seconds}s); fix NTP on this host"
            )

    def _bump_epoch(self, conn: pymysql.connections.Connection[Any]) -> Epoch:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO leader_epochs (lock_name, epoch, leader_instance, acquired_at) "
                "VALUES (%s, 1, %s, UTC_TIMESTAMP(3)) ON DUPLICATE KEY UPDATE "
                "epoch = epoch + 1, leader_instance = VALUES(leader_instance), "
                "acquired_at = VALUES(acquired_at)",
                (self._settings.lock_name, self._instance_id),
            )
        return Epoch(
            int(
                self._query_one(
                    conn,
                    "SELECT epoch FROM leader_epochs WHERE lock_name = %s",
                    (self._settings.lock_name,),
                )
            )
        )

    def _heartbeat(self, conn: pymysql.connections.Connection[Any], epoch: Epoch) -> bool:
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT IS_USED_LOCK(%s) = CONNECTION_ID(), "
                    "(SELECT epoch FROM leader_epochs WHERE lock_name = %s)",
                    (self._settings.lock_name, self._settings.lock_name),
                )
                row = cur.fetchone()
        except pymysql.MySQLError as exc:
            log.warning("leader heartbeat failed: %s", exc)
            return False
        if not row or row[0] != 1 or row[1] is None or int(row[1]) != epoch:
            return False
        with self._lock:
            self._last_good_heartbeat = time.monotonic()
        return True

    @staticmethod
    def _query_one(
        conn: pymysql.connections.Connection[Any], sql: str, args: tuple[Any, ...] = ()
    ) -> Any:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            row = cur.fetchone()
        return row[0] if row else None

    def _set_state(self, state: LeaderState) -> None:
        with self._lock:
            changed = state != self._state
            self._state = state
            if not state.leading:
                self._last_good_heartbeat = float("-inf")
        if changed:
            try:
                self._on_change(state)
            except Exception:
                log.exception("leadership change handler failed")

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

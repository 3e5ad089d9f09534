"""The connection pool every store function uses, and the start-up check that the database answers.

Invariants of every pooled session: UTC (``time_zone = '+00:00'``, so ``NOW()`` and the
``DATETIME(3)`` columns agree), ``utf8mb4`` (comparisons follow the columns' ``utf8mb4_bin``),
``READ COMMITTED``, and a fixed strict ``sql_mode`` so that a value too long for its column is
refused instead of truncated, whatever the server's defaults are. Every socket operation has a
timeout, so a dead server makes calls fail instead of hanging a worker thread forever.

WARNING: a pooled session that a frozen replica left in the middle of a leader transaction keeps
its share lock on the ``leader_epochs`` row (see :mod:`cadenza.store.fencing`) until the server
drops the session, and a new leader's epoch bump waits for it (up to
``innodb_lock_wait_timeout``, 50 s by default). Pass ``session_wait_timeout`` no larger than the
leader lock's lease so that the server drops such a session about as soon as it frees the lock.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Engine

_SQL_MODE = (
    "STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ZERO_DATE,NO_ZERO_IN_DATE,"
    "NO_ENGINE_SUBSTITUTION"
)
_DEFAULT_POOL_RECYCLE = 1800
_IDLE_SINCE = "cadenza.idle_since"

# PyMySQL / server error numbers, mapped to what a person should check.
_ACCESS_DENIED = {1044, 1045, 1698}
_UNKNOWN_DATABASE = 1049
_UNREACHABLE = {2002, 2003, 2005, 2006, 2013}


class DatabaseUnavailable(RuntimeError):
    """The database cannot be used; the message names the server, the database and the cause.

    ``permanent`` is True when waiting will not help (wrong credentials, no such database), so a
    caller retries only the rest.
    """

    def __init__(self, url: URL, cause: str, permanent: bool = False) -> None:
        self.address = f"{url.host or 'localhost'}:{url.port or 3306}"
        self.database = url.database
        self.cause = cause
        self.permanent = permanent
        super().__init__(
            f"database {self.database!r} at {self.address} as user {url.username!r} "
            f"is unavailable: {cause}"
        )


def create_engine(
    url: str | URL,
    *,
    pool_size: int = 8,
    max_overflow: int = 0,
    pool_timeout: float = 30.0,
    connect_timeout: float = 5.0,
    read_timeout: float = 30.0,
    write_timeout: float = 30.0,
    session_wait_timeout: int | None = None,
) -> Engine:
    """A pooled engine for ``url`` (``mysql+pymysql://...``) with the session settings above.

    At most ``pool_size + max_overflow`` connections are open; a caller beyond that waits up to
    ``pool_timeout`` seconds for one. ``read_timeout`` bounds every statement's wait for the
    server, lock waits included.
    ``session_wait_timeout`` sets the server's ``wait_timeout`` for these sessions (see the
    module's WARNING); a pooled connection left idle for half of it is then replaced before it
    is used again, before the server could have dropped it. A connection in steady use is
    kept: recycling by age would reconnect the whole pool every few seconds (each new PyMySQL
    connection builds a TLS context and runs the session's settings: 0.2 ms of the leader's CPU
    per run at 200 runs a second).
    """
    settings = ["time_zone = '+00:00'", f"sql_mode = '{_SQL_MODE}'"]
    idle_limit: float | None = None
    if session_wait_timeout is not None:
        if session_wait_timeout < 2:
            raise ValueError(f"session_wait_timeout must be at least 2, got {session_wait_timeout}")
        settings.append(f"wait_timeout = {int(session_wait_timeout)}")
        idle_limit = session_wait_timeout / 2
    connect_args: dict[str, Any] = {
        "charset": "utf8mb4",
        "connect_timeout": connect_timeout,
        "read_timeout": read_timeout,
        "write_timeout": write_timeout,
        # One statement: PyMySQL reads a single result for the init command.
        "init_command": "SET SESSION " + ", ".join(settings),
    }
    engine = sqlalchemy.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        pool_recycle=_DEFAULT_POOL_RECYCLE,
        pool_timeout=pool_timeout,
        isolation_level="READ COMMITTED",
        connect_args=connect_args,
    )
    if idle_limit is not None:
        _replace_when_idle(engine, idle_limit)
    return engine


def _replace_when_idle(engine: Engine, limit: float) -> None:
    """Replace a pooled connection at checkout when it sat in the pool more than ``limit``
    seconds (a ``DisconnectionError`` makes the pool reconnect that record and check out again)."""

    @sqlalchemy.event.listens_for(engine, "checkin")
    def idle_from(_: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @sqlalchemy.event.listens_for(engine, "checkout")
    def fresh_enough(_: Any, record: Any, __: Any) -> None:
        since = record.info.get(_IDLE_SINCE)  # the record's info is cleared on reconnecting
        if since is not None and time.monotonic() - since > limit:
            raise sa_exc.DisconnectionError(f"idle for more than {limit:g} s; reconnecting")


def check(engine: Engine) -> str:
    """The server's version; raises :class:`DatabaseUnavailable` saying what to fix."""
    url = engine.url
    try:
        with engine.connect() as conn:
            return str(conn.exec_driver_sql("SELECT VERSION()").scalar_one())
    except sa_exc.DBAPIError as exc:
        code = _error_code(exc)
        permanent = code in _ACCESS_DENIED or code == _UNKNOWN_DATABASE
        raise DatabaseUnavailable(url, explain(exc, url), permanent) from exc


def explain(exc: sa_exc.DBAPIError, url: URL) -> str:
    """What a connection error means for the person running Cadenza."""
    code = _error_code(exc)
    orig = exc.orig
    detail = orig.args[1] if orig is not None and len(orig.args) > 1 else str(exc)
    if code in _ACCESS_DENIED:
        return f"access denied: check the user name and password in the database URL ({detail})"
    if code == _UNKNOWN_DATABASE:
        return (
            f"the database does not exist: create it with CREATE DATABASE `{url.database}` "
            f"CHARACTER SET utf8mb4 COLLATE utf8mb4_bin ({detail})"
        )
    if code in _UNREACHABLE:
        return f"the server is unreachable: is it running, and are host and port right? ({detail})"
    return str(detail)


def _error_code(exc: sa_exc.DBAPIError) -> int | None:
    args = exc.orig.args if exc.orig is not None else ()
    return args[0] if args and isinstance(args[0], int) else None

"""``CADENZA_DATABASE_*`` and ``CADENZA_MIGRATIONS_DIR``: where the MySQL/MariaDB database is and
how the replica connects to it. The URL is parsed here, so a mistyped one or another database
stops the start, and the message never echoes its password."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from cadenza.settings.reading import Reader, SettingsError

DEFAULT_DATABASE_URL = "mysql+pymysql://root:123456@127.0.0.1:3306/jobs"


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = DEFAULT_DATABASE_URL
    """SQLAlchemy URL of the MySQL/MariaDB database (``CADENZA_DATABASE_URL``); in a cluster it
    comes from a Secret. The default is the original system's ``root:123456@127.0.0.1/jobs``."""

    pool_size: int = 8
    """Pooled connections for the mirror, claims, history and callbacks
    (``CADENZA_DATABASE_POOL_SIZE``). The leader lock uses a connection of its own on top."""

    connect_timeout: float = 5.0
    """Seconds to wait for a connection before the database counts as unreachable
    (``CADENZA_DATABASE_CONNECT_TIMEOUT``)."""

    migrations_dir: Path | None = None
    """Directory of the ordered SQL migrations (``CADENZA_MIGRATIONS_DIR``); default: the
    repository's ``sql/``, or ``/app/sql`` in the image."""


def read_database(read: Reader) -> DatabaseSettings:
    migrations = read("CADENZA_MIGRATIONS_DIR", str, "")
    return DatabaseSettings(
        url=_database_url(read("CADENZA_DATABASE_URL", str, DEFAULT_DATABASE_URL)),
        pool_size=read("CADENZA_DATABASE_POOL_SIZE", int, 8, minimum=1, maximum=512),
        connect_timeout=read(
            "CADENZA_DATABASE_CONNECT_TIMEOUT", float, 5.0, minimum=0.1, maximum=300
        ),
        migrations_dir=Path(migrations) if migrations else None,
    )


def _database_url(raw: str) -> str:
    """The URL, if SQLAlchemy can parse it and it names MySQL (the password is never echoed)."""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise SettingsError(
            "CADENZA_DATABASE_URL is not a database URL; expected one like "
            "mysql+pymysql://user:password@host:3306/jobs"
        ) from None
    if not url.drivername.startswith(("mysql", "mariadb")):
        raise SettingsError(
            f"CADENZA_DATABASE_URL names {url.drivername!r}; Cadenza needs MySQL or MariaDB "
            "(mysql+pymysql://user:password@host:3306/jobs)"
        )
    return raw

"""The local MariaDB server the tests and the demo use, and throw-away databases on it.

``scripts/setup`` installs ``mariadb-server`` from Debian's packages and creates the account; this
module only checks the server answers and hands out uniquely named databases. The default account
is the original system's ``root:123456@127.0.0.1:3306``.

Invariant: a database made by :func:`scratch_database` is dropped when its block ends, also when
the block fails.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pymysql


@dataclass(frozen=True)
class Server:
    """How to reach the server as an account allowed to create and drop databases."""

    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str = "123456"

    def connect(self, database: str | None = None) -> pymysql.connections.Connection:
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=database,
            connect_timeout=5,
            autocommit=True,
        )

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` on this server."""
        return f"mysql+pymysql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def check(self) -> str:
        """The server's version; raises with a hint when it does not answer."""
        try:
            with self.connect() as conn, conn.cursor() as cur:
                cur.execute("SELECT VERSION()")
                row = cur.fetchone()
        except pymysql.err.OperationalError as exc:
            raise RuntimeError(
                f"MariaDB at {self.host}:{self.port} is not usable as {self.user!r} ({exc}); "
                "run scripts/setup to install and start it"
            ) from exc
        return str(row[0]) if row else "unknown"

    def create_database(self, name: str) -> None:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")

    def drop_database(self, name: str) -> None:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


@contextlib.contextmanager
def scratch_database(server: Server, prefix: str = "cadenza_t") -> Iterator[str]:
    """Create an empty, uniquely named database; yield its name; drop it afterwards."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    server.create_database(name)
    try:
        yield name
    finally:
        server.drop_database(name)

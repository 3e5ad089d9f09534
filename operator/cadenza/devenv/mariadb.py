"""The local MariaDB server the tests and the demo use, throw-away databases on it, and private
servers a fault test may kill and restart.

``scripts/setup`` installs ``mariadb-server`` from Debian's packages and creates the account; this
module only checks the server answers and hands out uniquely named databases. The default account
is the original system's ``root:123456@127.0.0.1:3306``.

Invariants: a database made by :func:`scratch_database` is dropped when its block ends, also when
the block fails. A :func:`private_server` runs the same ``mariadbd`` binary with its own data
directory and port, so killing it touches nothing else on the machine; it dies with its parent.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pymysql

from cadenza.devenv.controlplane import free_port, spawn, terminate, wait_until


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


@dataclass
class PrivateServer:
    """A ``mariadbd`` of its own on a free port, with the default account (see below)."""

    workdir: Path
    server: Server
    process: subprocess.Popen[bytes] | None = field(default=None)

    def start(self, timeout: float = 60.0) -> None:
        """Start the server on its data directory and wait until it answers (after a crash,
        InnoDB recovers first: what was committed is there, nothing else)."""
        self._spawn()
        wait_until(self._answers, timeout, f"private MariaDB on port {self.server.port}")

    def _bootstrap(self, timeout: float = 60.0) -> None:
        """First start: only root over the unix socket exists; add the TCP account."""
        self._spawn()
        wait_until(self._socket_answers, timeout, f"private MariaDB at {self._socket}")
        s = self.server
        with self._socket_connection() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE USER '{s.user}'@'{s.host}' IDENTIFIED BY %s", (s.password,))
            cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{s.user}'@'{s.host}' WITH GRANT OPTION")
        wait_until(self._answers, timeout, f"private MariaDB on port {self.server.port}")

    @property
    def _socket(self) -> Path:
        return self.workdir / "mysqld.sock"

    def _socket_connection(self) -> pymysql.connections.Connection:
        return pymysql.connect(unix_socket=str(self._socket), user="root", autocommit=True)

    def _socket_answers(self) -> bool:
        self._alive()
        with socket.socket(socket.AF_UNIX) as probe:
            return probe.connect_ex(str(self._socket)) == 0

    def _spawn(self) -> None:
        self.process = spawn(
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={self.workdir / 'data'}",
                "--user=root",
                f"--port={self.server.port}",
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                f"--socket={self._socket}",
                f"--pid-file={self.workdir / 'mysqld.pid'}",
                "--skip-log-bin",
                "--max-connections=500",
                f"--log-error={self.workdir / 'error.log'}",
            ],
            self.workdir / "mariadbd.log",
        )

    def _alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            log = (self.workdir / "error.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"mariadbd exited with {self.process.returncode}:\n{log}")

    def _answers(self) -> bool:
        self._alive()
        try:
            self.server.check()
        except RuntimeError:
            return False
        return True

    def kill(self) -> None:
        """``kill -9``: a crash, with connections and transactions in flight."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self, down_seconds: float = 0.0) -> None:
        """Crash the server, keep it down ``down_seconds``, start it again."""
        self.kill()
        time.sleep(down_seconds)
        self.start()

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process, grace=30)
            self.process = None


@contextlib.contextmanager
def private_server() -> Iterator[PrivateServer]:
    """A fresh MariaDB server (its own data directory in a temporary directory, removed after),
    with the account ``root:123456`` over TCP on 127.0.0.1 as :class:`Server` expects."""
    workdir = Path(tempfile.mkdtemp(prefix="cadenza-mariadb-"))
    subprocess.run(
        [
            "mariadb-install-db",
            "--no-defaults",
            f"--datadir={workdir / 'data'}",
            "--user=root",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
        ],
        check=True,
        capture_output=True,
    )
    private = PrivateServer(workdir, Server(port=free_port()))
    try:
        private._bootstrap()
        yield private
    finally:
        private.stop()
        shutil.rmtree(workdir, ignore_errors=True)

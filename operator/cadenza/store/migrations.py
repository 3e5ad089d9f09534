"""The schema migration runner: applies ``sql/NNNN_<what>.sql`` in order, each exactly once.

Every replica calls :func:`migrate` at start. The runner holds a MySQL named lock
(``GET_LOCK``) while it works, so replicas starting together apply each migration once: the
others wait, then find nothing left to do. ``schema_migrations`` records each applied version
with the sha256 of its file.

Invariants:

- A version is recorded only after all of its statements ran. MySQL commits every DDL statement
  on its own, so a failure leaves a file half applied; its statements are written to be re-run
  (``CREATE TABLE IF NOT EXISTS``, ``CREATE INDEX IF NOT EXISTS``, ``ADD COLUMN IF NOT EXISTS``)
  and the next start applies it again from the top.
- The runner refuses to start (:class:`MigrationError`) when an applied file was edited (its
  checksum changed), when the database has versions this release does not know (it was migrated
  by a newer Cadenza), when a new file sorts before an applied one, or when the database already
  holds tables of Cadenza's names that Cadenza did not create (the original Go system's ``jobs``
  database has ``tasks``, ``executors``, ``task_executions``, ...: ``CREATE TABLE IF NOT EXISTS``
  would skip them and leave a schema of two shapes). Nothing is applied then.

A file is split into statements at each ``;`` that ends a line, so no statement may end a line
with ``;`` inside a string literal, and procedures (which need ``DELIMITER``) are not supported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select
from sqlalchemy.engine import URL, Connection, Engine

from cadenza.store import engine as engines
from cadenza.store import schema

log = logging.getLogger(__name__)

DEFAULT_SQL_DIR = Path(__file__).resolve().parents[3] / "sql"
"""The repository's ``sql/`` directory (``operator/cadenza/store/`` is three levels below it)."""

_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
_STATEMENT_END = re.compile(r";[ \t]*$", re.MULTILINE)
_LOCK_NAME_LIMIT = 64

_CREATE_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    VARCHAR(16)  NOT NULL,
    name       VARCHAR(255) NOT NULL,
    checksum   CHAR(64)     NOT NULL,
    applied_at DATETIME(3)  NOT NULL,
    PRIMARY KEY (version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
"""


class MigrationError(RuntimeError):
    """The database's schema cannot be brought to this release's version; nothing was applied."""


@dataclasses.dataclass(frozen=True)
class Migration:
    """One ``NNNN_<what>.sql`` file."""

    version: str
    name: str
    path: Path
    checksum: str
    """sha256 of the file's bytes."""
    sql: str = dataclasses.field(repr=False)
    """The file's text, read together with the checksum."""

    def statements(self) -> list[str]:
        return split_statements(self.sql)


def discover(directory: Path) -> list[Migration]:
    """The migrations in ``directory``, oldest first; other ``*.sql`` names are an error."""
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    found: dict[str, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(
                f"{path}: a migration must be named NNNN_<what>.sql "
                "(four digits, lowercase letters, digits and underscores)"
            )
        version = match["version"]
        if version in found:
            raise MigrationError(f"{path} and {found[version].path} share version {version}")
        content = path.read_bytes()
        found[version] = Migration(
            version=version,
            name=match["name"],
            path=path,
            checksum=hashlib.sha256(content).hexdigest(),
            sql=content.decode("utf-8"),
        )
    return [found[v] for v in sorted(found)]


def split_statements(sql: str) -> list[str]:
    """The statements of a file: split at each ``;`` ending a line, comment-only parts dropped."""
    statements = []
    for part in _STATEMENT_END.split(sql):
        code = [ln for ln in part.splitlines() if ln.strip() and not ln.strip().startswith("--")]
        if code:
            statements.append(part.strip())
    return statements


def migrate(
    engine_or_url: Engine | str | URL,
    directory: Path | None = None,
    *,
    lock_timeout: int = 60,
) -> list[str]:
    """Apply the pending migrations of ``directory``; the versions applied now, oldest first.

    Waits up to ``lock_timeout`` seconds for another replica's run to finish.
    """
    directory = DEFAULT_SQL_DIR if directory is None else directory
    migrations = discover(directory)
    if isinstance(engine_or_url, Engine):
        return _migrate(engine_or_url, migrations, directory, lock_timeout)
    engine = engines.create_engine(engine_or_url, pool_size=1)
    try:
        return _migrate(engine, migrations, directory, lock_timeout)
    finally:
        engine.dispose()


def _migrate(
    engine: Engine, migrations: list[Migration], directory: Path, lock_timeout: int
) -> list[str]:
    with (
        engine.connect() as conn,
        _named_lock(conn.execution_options(isolation_level="AUTOCOMMIT"), lock_timeout) as auto,
    ):
        _refuse_foreign_tables(auto)
        auto.exec_driver_sql(_CREATE_SCHEMA_MIGRATIONS)
        applied = {
            row.version: row.checksum
            for row in auto.execute(
                select(schema.schema_migrations.c.version, schema.schema_migrations.c.checksum)
            )
        }
        pending = _pending(migrations, applied, directory)
        for migration in pending:
            log.info("applying migration %s_%s", migration.version, migration.name)
            for number, statement in enumerate(migration.statements(), 1):
                try:
                    auto.exec_driver_sql(statement)
                except sa_exc.DBAPIError as exc:
                    raise MigrationError(
                        f"{migration.path}: statement {number} failed, the migration is not "
                        f"recorded and runs again from the top at the next start: {exc.orig}"
                    ) from exc
            auto.execute(
                schema.schema_migrations.insert().values(
                    version=migration.version,
                    name=migration.name,
                    checksum=migration.checksum,
                    applied_at=func.utc_timestamp(3),
                )
            )
        return [m.version for m in pending]


def _refuse_foreign_tables(conn: Connection) -> None:
    """Refuse a database that has tables of Cadenza's names but no record of Cadenza's
    migrations: another system's schema, which migrating would leave half one, half the other."""
    existing = {
        str(name)
        for (name,) in conn.exec_driver_sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()"
        )
    }
    if schema.schema_migrations.name in existing:
        return
    clashing = sorted(existing & set(schema.metadata.tables))
    if clashing:
        database = conn.exec_driver_sql("SELECT DATABASE()").scalar_one()
        raise MigrationError(
            f"database {database!r} already holds tables Cadenza did not create "
            f"({', '.join(clashing)}; no schema_migrations table), for example the original "
            "system's: point CADENZA_DATABASE_URL at a database of Cadenza's own (an empty one "
            "is migrated at start); nothing was changed"
        )


def _pending(
    migrations: list[Migration], applied: dict[str, str], directory: Path
) -> list[Migration]:
    """The migrations still to apply, after checking the applied ones against the files."""
    known = {m.version: m for m in migrations}
    unknown = sorted(set(applied) - set(known))
    if unknown:
        newest = migrations[-1].version if migrations else "none"
        raise MigrationError(
            f"the database has migrations {', '.join(unknown)} that {directory} does not have "
            f"(newest here: {newest}); it was migrated by a newer Cadenza or from another "
            "directory: run that release, or point CADENZA_MIGRATIONS_DIR at its sql/ directory"
        )
    for version, checksum in sorted(applied.items()):
        migration = known[version]
        if migration.checksum != checksum:
            raise MigrationError(
                f"{migration.path} was changed after it was applied (checksum {checksum} when "
                f"applied, {migration.checksum} now): restore the file and put the change in a "
                "new migration"
            )
    pending = [m for m in migrations if m.version not in applied]
    if pending and applied and pending[0].version < max(applied):
        raise MigrationError(
            f"{pending[0].path} sorts before the applied migration {max(applied)}: give it a "
            "version after the newest applied one"
        )
    return pending


def _lock_name(conn: Connection) -> str:
    """One lock per database: installations sharing a server do not wait for each other."""
    database = str(conn.exec_driver_sql("SELECT DATABASE()").scalar_one())
    name = f"cadenza.migrate.{database}"
    if len(name) > _LOCK_NAME_LIMIT:
        name = "cadenza.migrate." + hashlib.sha256(database.encode()).hexdigest()[:40]
    return name


@contextlib.contextmanager
def _named_lock(conn: Connection, timeout: int) -> Iterator[Connection]:
    """Hold ``GET_LOCK`` on ``conn``'s session for the ``with`` block."""
    name = _lock_name(conn)
    got = conn.exec_driver_sql("SELECT GET_LOCK(%s, %s)", (name, timeout)).scalar_one()
    if got != 1:
        raise MigrationError(
            f"timed out after {timeout}s waiting for the migration lock {name!r}: another "
            "replica is migrating this database (or hangs while holding the lock)"
        )
    try:
        yield conn
    finally:
        try:
            conn.exec_driver_sql("SELECT RELEASE_LOCK(%s)", (name,))
        except sa_exc.DBAPIError as exc:
            # The session is gone, and the server freed its lock with it.
            log.warning("could not release the migration lock %r: %s", name, exc)

"""Schema migrations against the real MariaDB: fresh install, re-runs, upgrades from every
version, replicas migrating at once, refusals, and schema.py agreeing with the SQL files."""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from cadenza.devenv import mariadb
from cadenza.store import engine as engines
from cadenza.store import migrations, schema

pytestmark = pytest.mark.mariadb

ALL = migrations.discover(migrations.DEFAULT_SQL_DIR)
VERSIONS = [m.version for m in ALL]


@pytest.fixture
def engine(database: str) -> Iterator[Engine]:
    eng = engines.create_engine(database, pool_size=2)
    yield eng
    assert eng.pool.checkedout() == 0, "a test leaked a pooled connection"  # type: ignore[attr-defined]
    eng.dispose()


def first(k: int, into: Path) -> Path:
    """A directory holding copies of the first ``k`` migrations."""
    into.mkdir()
    for migration in ALL[:k]:
        shutil.copy(migration.path, into / migration.path.name)
    return into


def dump(engine: Engine) -> dict[str, Any]:
    """Everything that defines the schema, plus the recorded migrations."""
    with engine.connect() as conn:
        names = sorted(conn.exec_driver_sql("SHOW TABLES").scalars())
        tables = {
            name: re.sub(
                r" AUTO_INCREMENT=\d+",
                "",
                conn.exec_driver_sql(f"SHOW CREATE TABLE `{name}`").one()[1],
            )
            for name in names
        }
        recorded = conn.exec_driver_sql(
            "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
        ).all()
    return {"tables": tables, "migrations": [tuple(r) for r in recorded]}


def test_a_fresh_database_is_migrated_to_the_newest_version(engine: Engine) -> None:
    assert sorted(VERSIONS) == VERSIONS and len(VERSIONS) >= 3

    assert migrations.migrate(engine) == VERSIONS

    with engine.connect() as conn:
        recorded = conn.exec_driver_sql(
            "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
        ).all()
        tables = set(conn.exec_driver_sql("SHOW TABLES").scalars())
    assert [tuple(r) for r in recorded] == [(m.version, m.name, m.checksum) for m in ALL]
    assert tables == set(schema.metadata.tables)


def test_migrating_again_changes_nothing(engine: Engine) -> None:
    migrations.migrate(engine)
    before = dump(engine)

    assert migrations.migrate(engine) == []

    assert dump(engine) == before


def test_a_url_is_accepted_as_well_as_an_engine(database: str, engine: Engine) -> None:
    assert migrations.migrate(database) == VERSIONS
    assert migrations.migrate(engine) == []


@pytest.mark.parametrize("k", range(len(ALL)), ids=lambda k: f"from-{k:04d}")
def test_every_earlier_version_upgrades_to_the_newest(
    k: int, engine: Engine, tmp_path: Path, mariadb_server: mariadb.Server
) -> None:
    assert migrations.migrate(engine, first(k, tmp_path / "old")) == VERSIONS[:k]

    assert migrations.migrate(engine) == VERSIONS[k:]

    with mariadb.scratch_database(mariadb_server) as fresh_name:
        fresh = engines.create_engine(mariadb_server.url(fresh_name), pool_size=1)
        try:
            migrations.migrate(fresh)
            expected = dump(fresh)["tables"]
        finally:
            fresh.dispose()
    assert dump(engine)["tables"] == expected


def test_replicas_migrating_at_once_apply_each_version_once(database: str, engine: Engine) -> None:
    replicas = 5
    start = threading.Barrier(replicas)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def replica() -> None:
        try:
            start.wait()
            results.append(migrations.migrate(database))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(replicas)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert len(results) == replicas
    assert sorted(v for applied in results for v in applied) == VERSIONS
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT version FROM schema_migrations").scalars().all()
    assert sorted(rows) == VERSIONS


def test_an_edited_applied_migration_is_refused(engine: Engine, tmp_path: Path) -> None:
    directory = first(len(ALL), tmp_path / "sql")
    migrations.migrate(engine, directory)
    edited = directory / ALL[1].path.name
    edited.write_text(edited.read_text() + "\n-- an innocent-looking edit\n")
    (directory / "9999_later.sql").write_text("CREATE TABLE later (id INT PRIMARY KEY);\n")

    with pytest.raises(migrations.MigrationError, match="was changed after it was applied") as e:
        migrations.migrate(engine, directory)

    assert ALL[1].path.name in str(e.value)
    assert "later" not in sa.inspect(engine).get_table_names()


def test_a_database_of_a_newer_release_is_refused(engine: Engine, tmp_path: Path) -> None:
    migrations.migrate(engine)
    before = dump(engine)

    with pytest.raises(migrations.MigrationError, match=f"{VERSIONS[-1]}.*newer Cadenza"):
        migrations.migrate(engine, first(len(ALL) - 1, tmp_path / "old"))

    assert dump(engine) == before


def test_a_new_migration_sorting_before_an_applied_one_is_refused(
    engine: Engine, tmp_path: Path
) -> None:
    directory = first(1, tmp_path / "sql")
    (directory / "0003_other.sql").write_text("CREATE TABLE other (id INT PRIMARY KEY);\n")
    migrations.migrate(engine, directory)
    shutil.copy(ALL[1].path, directory / ALL[1].path.name)

    with pytest.raises(migrations.MigrationError, match="sorts before the applied migration"):
        migrations.migrate(engine, directory)


def test_a_half_applied_migration_is_completed_on_the_next_start(
    engine: Engine, tmp_path: Path
) -> None:
    directory = first(len(ALL), tmp_path / "sql")
    broken = directory / ALL[1].path.name
    good = broken.read_text()
    statements = migrations.split_statements(good)
    assert len(statements) >= 2
    # The first table gets created, then the file fails: MySQL has committed the first DDL.
    broken.write_text(statements[0] + ";\nSELECT * FROM no_such_table;\n")

    with pytest.raises(migrations.MigrationError, match=r"statement 2 failed.*no_such_table"):
        migrations.migrate(engine, directory)
    with engine.connect() as conn:
        recorded = conn.exec_driver_sql("SELECT version FROM schema_migrations").scalars().all()
    assert recorded == [VERSIONS[0]]

    broken.write_text(good)
    assert migrations.migrate(engine, directory) == VERSIONS[1:]


def test_migrating_waits_for_the_lock_and_gives_up_with_a_clear_error(
    engine: Engine, mariadb_server: mariadb.Server, database: str
) -> None:
    name = make_url(database).database
    holder = mariadb_server.connect()
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT GET_LOCK(%s, 0)", (f"cadenza.migrate.{name}",))
            assert cur.fetchone() == (1,)
        with pytest.raises(migrations.MigrationError, match="waiting for the migration lock"):
            migrations.migrate(engine, lock_timeout=1)
    finally:
        holder.close()

    assert migrations.migrate(engine) == VERSIONS


def test_statements_split_at_a_semicolon_ending_a_line() -> None:
    sql = (
        "-- heading; not a statement\n"
        "CREATE TABLE a (x VARCHAR(8) DEFAULT 'a;b') COMMENT '50%';  \n"
        "\n"
        "CREATE TABLE b (\n  y INT -- trailing; comment\n);\n"
        "-- only a comment;\n"
    )
    assert migrations.split_statements(sql) == [
        "-- heading; not a statement\nCREATE TABLE a (x VARCHAR(8) DEFAULT 'a;b') COMMENT '50%'",
        "CREATE TABLE b (\n  y INT -- trailing; comment\n)",
    ]


def test_a_statement_may_contain_a_percent_sign(engine: Engine, tmp_path: Path) -> None:
    directory = tmp_path / "sql"
    directory.mkdir()
    (directory / "0001_percent.sql").write_text(
        "CREATE TABLE IF NOT EXISTS p (x INT) COMMENT '100% sure';\n"
    )
    assert migrations.migrate(engine, directory) == ["0001"]


@pytest.mark.parametrize("name", ["1_short.sql", "0001-dash.sql", "0001_Upper.sql"])
def test_misnamed_migration_files_are_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("SELECT 1;\n")
    with pytest.raises(migrations.MigrationError, match=r"NNNN_<what>\.sql"):
        migrations.discover(tmp_path)


def test_two_files_with_one_version_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;\n")
    (tmp_path / "0001_b.sql").write_text("SELECT 1;\n")
    with pytest.raises(migrations.MigrationError, match="share version 0001"):
        migrations.discover(tmp_path)


# -- schema.py equals the migrated schema --------------------------------------------------


def _type(sql: str) -> str:
    sql = sql.upper()
    sql = re.sub(r"^(TINYINT|SMALLINT|INTEGER|INT|BIGINT)\(\d+\)", r"\1", sql)
    return {"TINYINT": "BOOL", "INT": "INTEGER", "JSON": "LONGTEXT"}.get(sql, sql)


def _declared(table: sa.Table, dialect: sa.Dialect) -> dict[str, Any]:
    keys = {(str(i.name), tuple(c.name for c in i.columns), bool(i.unique)) for i in table.indexes}
    keys |= {
        (str(c.name), tuple(col.name for col in c.columns), True)
        for c in table.constraints
        if isinstance(c, sa.UniqueConstraint)
    }
    return {
        "columns": [
            (
                c.name,
                _type(c.type.compile(dialect=dialect)),
                c.nullable,
                None if c.server_default is None else str(c.server_default.arg.text),  # type: ignore[attr-defined]
            )
            for c in table.columns
        ],
        "primary_key": tuple(c.name for c in table.primary_key.columns),
        "autoincrement": None
        if table.autoincrement_column is None
        else table.autoincrement_column.name,
        "keys": keys,
        "foreign_keys": {
            (
                fk.name,
                tuple(fk.column_keys),
                fk.referred_table.name,
                tuple(e.column.name for e in fk.elements),
                fk.ondelete,
            )
            for fk in table.foreign_key_constraints
        },
        "json": {c.name for c in table.columns if isinstance(c.type, sa.JSON)},
    }


def _reflected(engine: Engine, name: str) -> dict[str, Any]:
    inspector = sa.inspect(engine)
    columns = inspector.get_columns(name)
    with engine.connect() as conn:
        json_checks = set(
            conn.exec_driver_sql(
                "SELECT constraint_name FROM information_schema.check_constraints "
                "WHERE constraint_schema = DATABASE() AND table_name = %s "
                "AND check_clause LIKE 'json_valid(%%'",
                (name,),
            ).scalars()
        )
    return {
        "columns": [
            (
                c["name"],
                _type(c["type"].compile(dialect=engine.dialect)),
                c["nullable"],
                c["default"],
            )
            for c in columns
        ],
        "primary_key": tuple(inspector.get_pk_constraint(name)["constrained_columns"]),
        "autoincrement": next((c["name"] for c in columns if c.get("autoincrement")), None),
        "keys": {
            (i["name"], tuple(i["column_names"]), bool(i["unique"]))
            for i in inspector.get_indexes(name)
        },
        "foreign_keys": {
            (
                fk["name"],
                tuple(fk["constrained_columns"]),
                fk["referred_table"],
                tuple(fk["referred_columns"]),
                fk["options"].get("ondelete"),
            )
            for fk in inspector.get_foreign_keys(name)
        },
        "json": json_checks,
    }


def test_schema_py_matches_the_migrated_database(engine: Engine) -> None:
    migrations.migrate(engine)
    assert set(sa.inspect(engine).get_table_names()) == set(schema.metadata.tables)

    for name, table in schema.metadata.tables.items():
        assert _reflected(engine, name) == _declared(table, engine.dialect), name


def test_every_table_is_innodb_utf8mb4_bin(engine: Engine) -> None:
    migrations.migrate(engine)
    with engine.connect() as conn:
        tables = conn.exec_driver_sql(
            "SELECT table_name, engine, table_collation FROM information_schema.tables "
            "WHERE table_schema = DATABASE()"
        ).all()
        collations = set(
            conn.exec_driver_sql(
                "SELECT DISTINCT collation_name FROM information_schema.columns "
                "WHERE table_schema = DATABASE() AND collation_name IS NOT NULL"
            ).scalars()
        )
    assert {(engine_, collation) for _, engine_, collation in tables} == {("InnoDB", "utf8mb4_bin")}
    assert collations == {"utf8mb4_bin"}

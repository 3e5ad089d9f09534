"""``bulk.update_by_key``: many rows, each with values of its own, in one statement; what it
writes reads back exactly as the per-row ``update()`` it replaces would have written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cadenza.store import bulk
from cadenza.store.schema import UtcDateTime

pytestmark = pytest.mark.mariadb

AT = datetime(2026, 12, 2, 15, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def probe(engine: Engine) -> sa.Table:
    table = sa.Table(
        "bulk_probe",
        sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("name", sa.String(64), nullable=True),
        sa.Column("at", UtcDateTime(), nullable=True),
        sa.Column("doc", sa.JSON, nullable=True),
        sa.Column("touched", UtcDateTime(), nullable=True),
    )
    table.create(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(table), [{"id": i, "name": f"row-{i}"} for i in range(1, 6)])
    return table


def read(engine: Engine, table: sa.Table) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(table).order_by(table.c.id))]


def test_each_row_gets_its_own_values_in_one_statement(engine: Engine, probe: sa.Table) -> None:
    rows = [
        {"id": 1, "name": "one", "at": AT, "doc": {"a": [1, 2], "b": None}},
        {"id": 3, "name": None, "at": None, "doc": None},
        {"id": 4, "name": "it's \"quoted\" % and \\", "at": AT + timedelta(hours=1),
         "doc": ["x"]},
        {"id": 99, "name": "no such row", "at": AT, "doc": {}},
    ]  # fmt: skip
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    with engine.begin() as conn:
        matched = bulk.update_by_key(conn, probe, "id", rows, {"touched": "UTC_TIMESTAMP(3)"})
    assert matched == 3
    assert len(statements) == 1
    got = {r["id"]: r for r in read(engine, probe)}
    assert got[1]["name"] == "one" and got[1]["doc"] == {"a": [1, 2], "b": None}
    assert got[1]["at"] == AT.replace(microsecond=123000)  # as UtcDateTime writes it
    assert got[3]["name"] is None and got[3]["at"] is None and got[3]["doc"] is None
    assert got[4]["name"] == 'it\'s "quoted" % and \\' and got[4]["doc"] == ["x"]
    assert all(got[i]["touched"] is not None for i in (1, 3, 4))
    assert got[2] == {"id": 2, "name": "row-2", "at": None, "doc": None, "touched": None}
    assert 99 not in got


def test_rows_must_name_the_same_columns(engine: Engine, probe: sa.Table) -> None:
    with engine.begin() as conn, pytest.raises(ValueError, match="same columns"):
        bulk.update_by_key(conn, probe, "id", [{"id": 1, "name": "a"}, {"id": 2, "at": AT}])
    with engine.begin() as conn:
        assert bulk.update_by_key(conn, probe, "id", []) == 0


def test_a_key_of_two_columns_and_expressions_that_read_the_row(engine: Engine) -> None:
    table = sa.Table(
        "bulk_pairs",
        sa.MetaData(),
        sa.Column("run", sa.BigInteger, primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=True),
    )
    table.create(engine)
    earlier = AT - timedelta(days=1)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(table),
            [
                {"run": r, "attempt": a, "status": "open", "at": earlier}
                for r in (1, 2)
                for a in (1, 2)
            ],
        )
        matched = bulk.update_by_key(
            conn,
            table,
            ("run", "attempt"),
            [
                {"run": 1, "attempt": 2, "status": "done", "at": AT},
                {"run": 2, "attempt": 1, "status": "failed", "at": None},
            ],
            # the row's own time when it has one, else the table's
            {"at": "COALESCE(v.`at`, t.`at`)"},
        )
    assert matched == 2
    with engine.connect() as conn:
        got = {(r.run, r.attempt): (r.status, r.at) for r in conn.execute(sa.select(table))}
    assert got == {
        (1, 1): ("open", earlier.replace(microsecond=123000)),
        (1, 2): ("done", AT.replace(microsecond=123000)),
        (2, 1): ("failed", earlier.replace(microsecond=123000)),
        (2, 2): ("open", earlier.replace(microsecond=123000)),
    }
    with engine.begin() as conn, pytest.raises(ValueError, match="same columns"):
        bulk.update_by_key(conn, table, ("run", "attempt"), [{"run": 1, "status": "x"}])


def test_a_batch_over_the_limit_goes_in_several_statements_each_row_once(
    engine: Engine, probe: sa.Table
) -> None:
    rows = [{"id": i, "name": f"new-{i}", "doc": {"pad": "x" * 40}} for i in range(1, 6)]
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    with engine.begin() as conn:
        matched = bulk.update_by_key(conn, probe, "id", rows, where="t.`id` <> 3", limit=400)
    assert matched == 4  # row 3 left alone by the condition, in whichever statement it was
    assert len(statements) > 1
    assert all(len(sql) <= 400 for sql in statements)
    got = {r["id"]: r for r in read(engine, probe)}
    assert [got[i]["name"] for i in range(1, 6)] == ["new-1", "new-2", "row-3", "new-4", "new-5"]
    assert all(got[i]["doc"] == {"pad": "x" * 40} for i in (1, 2, 4, 5))


def test_a_batch_larger_than_the_servers_packet_limit_is_written_whole(
    engine: Engine, probe: sa.Table
) -> None:
    # A callback batch may carry results of up to a MiB each (core.texts.MAX_RESULT_BYTES).
    with engine.connect() as conn:
        packet = int(conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar_one())
    big = "r" * 900_000
    count = packet // len(big) + 2
    with engine.begin() as conn:
        conn.execute(sa.insert(probe), [{"id": 100 + i} for i in range(count)])
        rows = [{"id": 100 + i, "doc": {"result": big, "n": i}} for i in range(count)]
        assert bulk.update_by_key(conn, probe, "id", rows) == count
    got = {r["id"]: r for r in read(engine, probe)}
    assert all(got[100 + i]["doc"] == {"result": big, "n": i} for i in range(count))

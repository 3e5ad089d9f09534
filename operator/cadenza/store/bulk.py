"""Many rows of one table updated with values of their own, in one statement (or a few, for a
batch too large for one).

PyMySQL sends an ``executemany`` of an ``UPDATE`` as one statement per parameter set (it folds
only ``INSERT ... VALUES`` into one); with hundreds of runs per batch that was most of a batch's
time on the fire lane. :func:`update_by_key` joins the table to a derived table holding the rows
(``SELECT ... UNION ALL SELECT ...``) and sets each column from it: one round trip per batch.

Invariant: values pass through their column's SQLAlchemy type first (UTC datetimes, JSON), so a
row written here reads back as it would after the ``update()`` it replaces. The statement is sent
as text (:class:`cadenza.store.sqltext.Literals`): a batch's repeated values are rendered once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Connection

from cadenza.store import sqltext


def update_by_key(
    conn: Connection,
    table: Table,
    key: str | Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    fixed: Mapping[str, str] | None = None,
    where: str | None = None,
    limit: int = sqltext.STATEMENT_CHARACTERS,
) -> int:
    """Set, for each row, the columns it names (except the ``key`` columns) on the table's row
    of its key, and the columns of ``fixed`` to their SQL expressions (the same for every row);
    the rows matched. Every row must name the same columns, and no two rows the same key.

    An expression of ``fixed`` may read the row's values as ``v.`name```; for a column the rows
    name too, it replaces the plain copy (``COALESCE(v.`finished_at`, UTC_TIMESTAMP(3))``).
    ``where``, an SQL condition on ``t`` (the table's row) and ``v`` (the row given), leaves
    the rows it does not hold for as they are (and not counted).

    A batch longer than ``limit`` characters of SQL goes in as many statements as it needs
    (each row in one of them), in the caller's transaction."""
    if not rows:
        return 0
    keys = [key] if isinstance(key, str) else list(key)
    columns = list(rows[0])
    if not set(keys) <= set(columns) or any(list(row) != columns for row in rows):
        raise ValueError(f"every row must name the same columns, {keys!r} among them")
    fixed = fixed or {}
    dialect = conn.dialect
    processors = [table.c[name].type.bind_processor(dialect) for name in columns]
    literal = sqltext.Literals(conn)
    rendered = [
        [
            literal(row[name] if process is None else process(row[name]))
            for name, process in zip(columns, processors, strict=True)
        ]
        for row in rows
    ]
    assignments = [
        f"t.`{name}` = v.`{name}`" for name in columns if name not in keys and name not in fixed
    ]
    assignments += [f"t.`{name}` = {expression}" for name, expression in fixed.items()]
    joined = " AND ".join(f"t.`{name}` = v.`{name}`" for name in keys)
    tail = f") AS v ON {joined} SET {', '.join(assignments)}"
    if where is not None:
        tail += f" WHERE {where}"
    head = f"UPDATE `{table.name}` AS t JOIN ("
    matched = 0
    for chunk in sqltext.chunks(rendered, _length, limit - len(head) - len(tail)):
        first = [f"{v} AS `{name}`" for v, name in zip(chunk[0], columns, strict=True)]
        selects = [first, *chunk[1:]]
        derived = " UNION ALL ".join("SELECT " + ", ".join(values) for values in selects)
        matched += sqltext.execute(conn, head + derived + tail).rowcount
    return matched


def _length(values: Sequence[str]) -> int:
    """A row's share of the statement: its values, their separators, ``SELECT`` and ``UNION
    ALL`` (its column aliases, in the first row only, are not counted)."""
    return sum(map(len, values)) + 2 * len(values) + 17

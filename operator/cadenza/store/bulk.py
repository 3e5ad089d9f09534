"""Many rows of one table updated with values of their own, in one statement.

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
) -> int:
    """Set, for each row, the columns it names (except the ``key`` columns) on the table's row
    of its key, and the columns of ``fixed`` to their SQL expressions (the same for every row);
    the rows matched. Every row must name the same columns, and no two rows the same key.

    An expression of ``fixed`` may read the row's values as ``v.`name```; for a column the rows
    name too, it replaces the plain copy (``COALESCE(v.`finished_at`, UTC_TIMESTAMP(3))``).
    ``where``, an SQL condition on ``t`` (the table's row) and ``v`` (the row given), leaves
    the rows it does not hold for as they are (and not counted)."""
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
    selects = []
    for n, row in enumerate(rows):
        values = [
            literal(row[name] if process is None else process(row[name]))
            for name, process in zip(columns, processors, strict=True)
        ]
        if n == 0:
            values = [f"{v} AS `{name}`" for v, name in zip(values, columns, strict=True)]
        selects.append("SELECT " + ", ".join(values))
    derived = " UNION ALL ".join(selects)
    assignments = [
        f"t.`{name}` = v.`{name}`" for name in columns if name not in keys and name not in fixed
    ]
    assignments += [f"t.`{name}` = {expression}" for name, expression in fixed.items()]
    joined = " AND ".join(f"t.`{name}` = v.`{name}`" for name in keys)
    sql = (
        f"UPDATE `{table.name}` AS t JOIN ({derived}) AS v ON {joined} SET {', '.join(assignments)}"
    )
    if where is not None:
        sql += f" WHERE {where}"
    return sqltext.execute(conn, sql).rowcount

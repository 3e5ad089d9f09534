"""The fire lane's statements written out as SQL text, each distinct value rendered once.

A tick of a thousand runs sends a few statements of tens of thousands of values. Through
SQLAlchemy's parameter processing and PyMySQL's generic escaping, each value cost several
function calls (a dict of parameters per row, a type lookup, a format per datetime), and that
Python, on the lane's thread, competed with the event loop for the interpreter: it was what
fell behind first at 1,000 runs a second. A batch repeats most of its values (one tick, one
deadline, three pods), so :class:`Literals` renders each distinct one once.

Invariants:

- Strings are escaped by the driver connection's own ``escape`` (which honours the session's
  ``NO_BACKSLASH_ESCAPES``): this is the same client-side interpolation PyMySQL does for every
  parameterised statement, not a looser one.
- Times go through :class:`cadenza.store.schema.UtcDateTime` first: aware datetimes only,
  truncated to milliseconds, so a row written here reads back as one written through the
  table's types.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, CursorResult

from cadenza.store import schema

T = TypeVar("T")
_TIME = schema.UtcDateTime()
_AS_IS = {"no_parameters": True}
"""Sent as written: without parameters the driver must not read ``%`` in a value as one."""


STATEMENT_CHARACTERS = 1_000_000
"""The most SQL text one statement of a batch holds (:func:`insert_rows`, and
:func:`cadenza.store.bulk.update_by_key`), as PyMySQL's own ``executemany`` splits its
multi-row inserts: far under any server's ``max_allowed_packet`` (MariaDB's default is 16 MiB)
even at four bytes a character, where a batch of Tasks whose payloads near the API server's
object limit, or a callback batch of results of a MiB each, would not be."""


def execute(conn: Connection, sql: str) -> CursorResult[Any]:
    """Run a statement whose values are :class:`Literals` already."""
    return conn.exec_driver_sql(sql, execution_options=_AS_IS)


def insert_rows(
    conn: Connection, head: str, rows: Iterable[str], limit: int = STATEMENT_CHARACTERS
) -> None:
    """``head`` (``INSERT ... VALUES ``) with the rows comma-separated, in as many statements as
    keep each within ``limit`` characters (a row longer than that alone in its own)."""
    for statement in statements(head, rows, limit):
        execute(conn, statement)


def statements(head: str, rows: Iterable[str], limit: int) -> list[str]:
    """The statements :func:`insert_rows` sends."""
    return [head + ", ".join(chunk) for chunk in chunks(list(rows), len, limit - len(head))]


def chunks(items: Sequence[T], length: Callable[[T], int], limit: int) -> Iterator[Sequence[T]]:
    """The items in order, in consecutive runs whose lengths (each item's plus two, for a
    separator) add up to at most ``limit``; an item longer than that alone in its run."""
    start = size = 0
    for i, item in enumerate(items):
        n = length(item) + 2
        if i > start and size + n > limit:
            yield items[start:i]
            start, size = i, 0
        size += n
    if start < len(items):
        yield items[start:]


def ids(runs: Iterable[int]) -> str:
    """Row ids for an ``IN (...)``, each once and ascending (the order rows are locked in
    everywhere); ``NULL`` when there are none (matches nothing)."""
    return ", ".join([str(int(run)) for run in sorted(set(runs))]) or "NULL"


class Literals:
    """SQL literals for one statement on ``conn``'s driver connection."""

    def __init__(self, conn: Connection) -> None:
        driver = conn.connection.dbapi_connection
        if driver is None:  # pragma: no cover - a checked-out connection always has one
            raise RuntimeError("the connection is closed")
        self._escape = driver.escape
        self._dialect = conn.dialect
        self._seen: dict[Any, str] = {}

    def __call__(self, value: Any) -> str:
        """The literal of a value already in the driver's terms (an ``int``, a ``str``, a
        naive UTC ``datetime`` from a column type, ``None``); times are :meth:`when`'s."""
        if value is None:
            return "NULL"
        if type(value) is int:
            return str(value)
        if isinstance(value, str | datetime):
            key = (type(value), value)
            text = self._seen.get(key)
            if text is None:
                text = self._seen[key] = str(self._escape(value))
            return text
        return str(self._escape(value))

    def when(self, value: datetime | None) -> str:
        """The literal of an aware datetime (``ValueError`` for a naive one), to the
        millisecond."""
        if value is None:
            return "NULL"
        return self(_TIME.process_bind_param(value, self._dialect))

    def row(self, values: Iterable[Any]) -> str:
        """``(v1, v2, ...)`` of values already in the driver's terms."""
        return "(" + ", ".join([self(v) for v in values]) + ")"

    def listing(self, values: Iterable[Any]) -> str:
        """``v1, v2, ...`` for an ``IN (...)``; ``NULL`` when empty (matches nothing)."""
        return ", ".join([self(v) for v in values]) or "NULL"

"""Plain SQL against a test database, on a session of its own (outside the code under test)."""

from __future__ import annotations

from typing import Any

import pymysql
from sqlalchemy.engine import make_url


def connect(database_url: str, **kwargs: Any) -> pymysql.connections.Connection[Any]:
    url = make_url(database_url)
    return pymysql.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username,
        password=url.password or "",
        database=url.database,
        **{"autocommit": True, **kwargs},
    )


def rows(database_url: str, query: str, *args: object) -> list[tuple[Any, ...]]:
    with connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(query, args)
        return list(cur.fetchall())


def records(database_url: str, query: str, *args: object) -> list[dict[str, Any]]:
    with (
        connect(database_url, cursorclass=pymysql.cursors.DictCursor) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(query, args)
        return list(cur.fetchall())


def scalar(database_url: str, query: str, *args: object) -> Any:
    found = rows(database_url, query, *args)
    return found[0][0] if found else None

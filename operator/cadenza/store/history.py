"""Reading the run history for the REST API: pages of runs, one run with its attempts, and the
run a manual trigger made.

Pages are newest first and keyed on the execution id (``id < before``), never on an offset: a run
inserted while a client pages gets a larger id than any already served, so following the cursor
never repeats a run nor skips one that existed when the first page was read.

Invariant: read-only, short transactions on the pooled engine; never called from the event loop
(each function blocks).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from cadenza.store import schema

_runs = schema.task_executions
_attempts = schema.execution_attempts

SUMMARY_COLUMNS = [c for c in _runs.c if c.name not in ("callback_token_hash", "result")]
"""Every column a listing shows: the result may be large and the token hash is a secret."""


@dataclasses.dataclass(frozen=True)
class Filter:
    """Which runs a page holds; every field left empty matches all."""

    namespace: str = ""
    task_name: str = ""
    statuses: Collection[str] = ()
    origins: Collection[str] = ()
    since: datetime | None = None
    """Runs requested at or after this time (aware)."""
    until: datetime | None = None
    """Runs requested before this time (aware)."""


@dataclasses.dataclass(frozen=True)
class Page:
    runs: list[dict[str, Any]]
    """Newest first; at most the limit asked for."""
    next_before: int | None
    """The id to pass as ``before`` for the next page; None when this is the last."""


def page(engine: Engine, where: Filter, limit: int, before: int | None = None) -> Page:
    """Up to ``limit`` runs matching ``where`` with ``id < before``, newest first."""
    conditions = _conditions(where)
    if before is not None:
        conditions.append(_runs.c.id < before)
    query = select(*SUMMARY_COLUMNS).where(*conditions).order_by(_runs.c.id.desc()).limit(limit + 1)
    with engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(query)]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, int(rows[-1]["id"]) if more and rows else None)


def run(engine: Engine, run_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """One run (every column but the token hash) and its attempts in order; None if absent."""
    columns = [*SUMMARY_COLUMNS, _runs.c.result]
    attempt_columns = [c for c in _attempts.c if c.name != "callback_token_hash"]
    with engine.connect() as conn:
        found = conn.execute(select(*columns).where(_runs.c.id == run_id)).first()
        if found is None:
            return None
        attempts = conn.execute(
            select(*attempt_columns)
            .where(_attempts.c.execution_id == run_id)
            .order_by(_attempts.c.attempt)
        )
        return dict(found._mapping), [dict(a._mapping) for a in attempts]


def run_by_trigger(engine: Engine, task_uid: str, trigger_key: str) -> int | None:
    """The id of the run the trigger ``trigger_key`` made for the Task, if one exists yet."""
    query = select(_runs.c.id).where(
        _runs.c.task_uid == task_uid, _runs.c.trigger_key == trigger_key
    )
    with engine.connect() as conn:
        found = conn.execute(query).scalar()
    return None if found is None else int(found)


def _conditions(where: Filter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if where.namespace:
        conditions.append(_runs.c.namespace == where.namespace)
    if where.task_name:
        conditions.append(_runs.c.task_name == where.task_name)
    if where.statuses:
        conditions.append(_runs.c.status.in_(list(where.statuses)))
    if where.origins:
        conditions.append(_runs.c.origin.in_(list(where.origins)))
    if where.since is not None:
        conditions.append(_runs.c.requested_at >= where.since)
    if where.until is not None:
        conditions.append(_runs.c.requested_at < where.until)
    return conditions

"""The mirror's batch write of Tasks (:func:`upsert_tasks`): thousands at once when Tasks are
applied in bulk or a new leader resyncs, so the statements are few, sent as text
(:mod:`cadenza.store.sqltext`) and split where a batch outgrows one. The rest of the mirror's
writes, and its invariants, are in :mod:`cadenza.store.mirror`, which calls this.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, literal_column, select, tuple_, update
from sqlalchemy.engine import Connection

from cadenza.core.ids import TaskUid
from cadenza.store import fencing, schema, sqltext
from cadenza.store.mirror_rows import TaskRow

_NOW = func.utc_timestamp(3)
# Set by ``fencing.leader_transaction`` for the length of each leader transaction.
_EPOCH: ColumnElement[int] = literal_column(f"@{fencing.EPOCH_VARIABLE}")
_tasks = schema.tasks
_executors = schema.executors


class Change(enum.Enum):
    """What a write did to a row."""

    UNCHANGED = "unchanged"
    CREATED = "created"
    UPDATED = "updated"


def upsert_tasks(
    conn: Connection, rows: Sequence[TaskRow], limit: int = sqltext.STATEMENT_CHARACTERS
) -> dict[TaskUid, Change]:
    """Write Tasks and their executor references in a few statements, whatever their number:
    which exist and with what hash, the Executors they name, then one statement per kind of
    write. A Task whose ``spec_hash`` is unchanged is not written.

    The look-up and the writes of new Tasks (thousands at once when Tasks are applied in bulk)
    are sent as text (:mod:`cadenza.store.sqltext`): the spec goes in as the JSON text the row
    already holds, rather than decoded and encoded again by the column type. A statement that
    would list more than ``limit`` characters of rows or keys is sent in several."""
    if not rows:
        return {}
    literal = sqltext.Literals(conn)
    stored: dict[str, str] = {}
    for uids in _listings([literal(r.uid) for r in rows], limit - len(_STORED)):
        found = sqltext.execute(conn, _STORED + uids + ")")
        stored.update((uid, spec_hash) for uid, spec_hash in map(tuple, found))
    changes = {
        row.uid: Change.UNCHANGED
        if stored.get(row.uid) == row.spec_hash
        else Change.UPDATED
        if row.uid in stored
        else Change.CREATED
        for row in rows
    }
    written = [row for row in rows if changes[row.uid] is not Change.UNCHANGED]
    if not written:
        return changes
    executors = _executor_uids(conn, written)
    new = [row for row in written if changes[row.uid] is Change.CREATED]
    if new:
        _insert_tasks(conn, literal, new, executors, limit)
    old = [row for row in written if changes[row.uid] is Change.UPDATED]
    if old:
        conn.execute(_UPDATE_TASK, [_prefixed(_task_values(row, executors)) for row in old])
        for uids in _listings([literal(r.uid) for r in old], limit - len(_UNLINK)):
            sqltext.execute(conn, _UNLINK + uids + ")")
    links = [
        literal.row(
            (
                row.uid,
                entry.name,
                executors.get((row.namespace, entry.name)),
                entry.weight,
                entry.priority,
                position,
            )
        )
        for row in written
        for position, entry in enumerate(row.executors)
    ]
    sqltext.insert_rows(conn, _INSERT_LINKS, links, limit)
    return changes


def _insert_tasks(
    conn: Connection,
    literal: sqltext.Literals,
    new: Sequence[TaskRow],
    executors: Mapping[tuple[str, str], str],
    limit: int,
) -> None:
    # A Task deleted while nobody watched, and created again under its name. A chunk's names
    # need only its own uids beside them: a row under one of its names is that name's.
    keys = [(literal.row((r.namespace, r.name)), literal(r.uid)) for r in new]
    room = limit - len(_DELETE_RECREATED)
    for chunk in sqltext.chunks(keys, lambda key: len(key[0]) + len(key[1]) + 2, room):
        names = ", ".join(name for name, _ in chunk)
        uids = ", ".join(uid for _, uid in chunk)
        sqltext.execute(conn, _DELETE_RECREATED.format(names=names, uids=uids))
    values = []
    for row in new:
        columns = [row.spec_json if c == "spec" else getattr(row, c) for c in _TASK_COLUMNS]
        missing = json.dumps(_missing(row, executors))
        values.append(literal.row((*columns, missing))[:-1] + _CREATED_SUFFIX)
    sqltext.insert_rows(conn, _INSERT_TASKS, values, limit)


def _listings(literals: Sequence[str], limit: int) -> Iterator[str]:
    """The literals comma-joined for ``IN (...)`` lists of at most ``limit`` characters each."""
    for chunk in sqltext.chunks(literals, len, limit):
        yield ", ".join(chunk)


_TASK_COLUMNS = [
    "spec" if f.name == "spec_json" else f.name
    for f in dataclasses.fields(TaskRow)
    if f.name != "executors"
]
_STORED = "SELECT `uid`, `spec_hash` FROM `tasks` WHERE `uid` IN ("
_UNLINK = "DELETE FROM `task_executors` WHERE `task_uid` IN ("
_DELETE_RECREATED = (
    "DELETE FROM `tasks` WHERE (`namespace`, `name`) IN ({names}) AND `uid` NOT IN ({uids})"
)
_INSERT_TASKS = (
    "INSERT INTO `tasks` ("
    + ", ".join(f"`{name}`" for name in (*_TASK_COLUMNS, "missing_executors"))
    + ", `created_at`, `updated_at`, `epoch`) VALUES "
)
_CREATED_SUFFIX = f", UTC_TIMESTAMP(3), UTC_TIMESTAMP(3), @{fencing.EPOCH_VARIABLE})"
"""Ends a new Task's row of values in place of its closing parenthesis: its times and the
writing leader's epoch."""
_INSERT_LINKS = (
    "INSERT INTO `task_executors` (`task_uid`, `executor_name`, `executor_uid`, `weight`, "
    "`priority`, `position`) VALUES "
)
_UPDATE_TASK = (
    update(_tasks)
    .where(_tasks.c.uid == bindparam("b_uid"))
    .values(
        {
            **{
                name: bindparam(f"b_{name}", type_=_tasks.c[name].type)
                for name in (*_TASK_COLUMNS, "missing_executors")
                if name != "uid"
            },
            "updated_at": _NOW,
            "epoch": _EPOCH,
        }
    )
)


def _task_values(row: TaskRow, executors: Mapping[tuple[str, str], str]) -> dict[str, Any]:
    values = {name: getattr(row, name) for name in _TASK_COLUMNS}
    values["missing_executors"] = _missing(row, executors)
    return values


def _missing(row: TaskRow, executors: Mapping[tuple[str, str], str]) -> list[str]:
    """The Executors the Task names that do not exist (yet)."""
    return [e.name for e in row.executors if (row.namespace, e.name) not in executors]


def _prefixed(values: Mapping[str, Any]) -> dict[str, Any]:
    return {f"b_{name}": value for name, value in values.items()}


def _executor_uids(conn: Connection, rows: Sequence[TaskRow]) -> dict[tuple[str, str], str]:
    """The uid of each Executor the Tasks name, by namespace and name (absent: missing)."""
    named = {(row.namespace, e.name) for row in rows for e in row.executors}
    if not named:
        return {}
    found = conn.execute(
        select(_executors.c.namespace, _executors.c.name, _executors.c.uid).where(
            tuple_(_executors.c.namespace, _executors.c.name).in_(sorted(named))
        )
    )
    return {(namespace, name): uid for namespace, name, uid in found}

"""The rows of the mirror (:mod:`cadenza.store.mirror`): a Task, an Executor, one of its pods,
a Task's reference to an Executor, as written and as read back (:mod:`cadenza.store.mirror_reads`),
and what a resync changed."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.engine import Row

from cadenza.core.ids import TaskUid
from cadenza.core.taskspec import ExecutorRef

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_Row = TypeVar("_Row", bound="DataclassInstance")


@dataclasses.dataclass(frozen=True)
class TaskRow:
    """A Task as mirrored; ``spec_hash`` covers the spec and the annotations that matter.

    ``spec_json`` is the spec as JSON text, what the ``spec`` column holds: the leader keeps a
    row per Task, and text is a fraction of the decoded dicts' size. Rows compare by
    ``spec_hash``, not by the text, whose spacing depends on who wrote it.
    """

    uid: TaskUid
    namespace: str
    name: str
    generation: int
    cron_expression: str
    time_zone: str
    suspend: bool
    execution_mode: str
    load_balance_strategy: str
    handler: str
    timeout_seconds: int
    spec_json: str = dataclasses.field(hash=False, compare=False)
    spec_hash: str
    original_name: str | None = None
    valid: bool = True
    invalid_reason: str | None = None
    executors: tuple[ExecutorRef, ...] = ()

    @property
    def spec(self) -> Any:
        return json.loads(self.spec_json)


@dataclasses.dataclass(frozen=True)
class ExecutorRow:
    """An Executor as mirrored."""

    uid: str
    namespace: str
    name: str
    selector: Mapping[str, Any] = dataclasses.field(hash=False)
    port: int
    scheme: str
    spec: Mapping[str, Any] = dataclasses.field(hash=False)
    spec_hash: str
    generation: int


@dataclasses.dataclass(frozen=True)
class InstanceRow:
    """A pod selected by an Executor, as Kubernetes reports it (health is the leader's own)."""

    pod_uid: str
    pod_name: str
    namespace: str
    ip: str | None
    phase: str
    ready: bool


@dataclasses.dataclass(frozen=True)
class ExecutorLink:
    """A ``task_executors`` row: a Task's reference, resolved to the Executor's uid if present."""

    task_uid: TaskUid
    executor_name: str
    executor_uid: str | None
    weight: int
    priority: int


@dataclasses.dataclass(frozen=True)
class ResyncCounts:
    """What :func:`resync` changed: Tasks and Executors created, updated and deleted; a changed
    set of pods of one Executor counts as one update."""

    created: int = 0
    updated: int = 0
    deleted: int = 0


def row_values(row: DataclassInstance, exclude: str = "") -> dict[str, Any]:
    """A row dataclass's fields as column values (shallow, unlike ``dataclasses.asdict``)."""
    return {f.name: getattr(row, f.name) for f in dataclasses.fields(row) if f.name != exclude}


def from_row(row_type: type[_Row], row: Row[Any], **given: Any) -> _Row:
    """A row dataclass from a result row holding a column for each field not ``given``."""
    columns = row._mapping
    names = [f.name for f in dataclasses.fields(row_type)]
    return row_type(**{name: columns[name] for name in names if name not in given}, **given)

"""The mirror as it should be, computed purely from the watched objects: a row for each Task,
Executor and selected pod (:mod:`cadenza.store.mirror_rows`), and the conditions the mirror
derives for each Task. :mod:`cadenza.mirror` writes what changed.

One object never fails the snapshot: a row holds each bad field at its default (within the
columns' bounds), and a Task whose row cannot be built at all is left out, with a condition that
says why; every other Task keeps its row.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from cadenza.core import fields
from cadenza.core.ids import TaskUid
from cadenza.executors import members
from cadenza.executors import spec as executor_spec
from cadenza.kube import conditions
from cadenza.kube.hub import Hub
from cadenza.kube.views import ExecutorView, PodView, TaskView
from cadenza.store.mirror_rows import ExecutorRow, InstanceRow, TaskRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskConditions:
    """The conditions the mirror derives for one Task: problems in its spec, Executors missing."""

    namespace: str
    name: str
    generation: int
    conditions: list[conditions.Condition]


@dataclass(frozen=True)
class Snapshot:
    """The mirror as it should be, computed purely from the indexes."""

    tasks: list[TaskRow]
    executors: list[ExecutorRow]
    instances: dict[str, list[InstanceRow]]
    task_conditions: dict[TaskUid, TaskConditions] = field(default_factory=dict)


ORIGINAL_NAME_LIMIT = 255
"""The ``tasks.original_name`` column; the admission webhook refuses longer annotations."""


def task_row(view: TaskView) -> TaskRow:
    """The Task's row, from its spec as the shared reader reads it: a bad field holds its default
    (so every column's bounds hold and one Task never fails the mirror's transaction) and the
    problems go to ``invalid_reason``."""
    spec, problems = view.task_spec
    original = view.original_name
    if original is not None and len(original) > ORIGINAL_NAME_LIMIT:
        # One oversized annotation must not fail the whole mirror transaction.
        log.warning(
            "task %s/%s: original-name annotation longer than %d characters ignored",
            view.namespace,
            view.name,
            ORIGINAL_NAME_LIMIT,
        )
        original = None
    invalid = "; ".join(str(p) for p in problems) or None
    return TaskRow(
        uid=TaskUid(view.uid),
        namespace=view.namespace,
        name=view.name,
        original_name=original,
        generation=view.generation,
        cron_expression=spec.expression,
        time_zone=spec.time_zone,
        suspend=spec.suspend,
        execution_mode=spec.mode.value,
        load_balance_strategy=spec.strategy.value,
        handler=spec.handler,
        timeout_seconds=spec.timeout_seconds,
        spec_json=_storable(view, problems),
        spec_hash=view.spec_hash,
        valid=invalid is None,
        invalid_reason=invalid,
        executors=spec.executors,
    )


def _storable(view: TaskView, problems: Sequence[fields.FieldError]) -> str:
    """The spec as the ``spec`` JSON column can hold it: a payload nested deeper than the
    database accepts would fail the whole mirror transaction, so it is left out (the Task is
    invalid and never runs anyway)."""
    if not any(p.field == "spec.payload" for p in problems):
        return view.spec_json  # the view's own text: one copy per Task
    stored = view.spec
    stored.pop("payload", None)
    return json.dumps(stored, separators=(",", ":"))


def executor_row(view: ExecutorView) -> ExecutorRow:
    spec = executor_spec.parse_spec(view.spec)
    return ExecutorRow(
        uid=view.uid,
        namespace=view.namespace,
        name=view.name,
        selector=dict(view.selector),
        port=spec.port,
        scheme=spec.scheme,
        spec=dict(view.spec),
        spec_hash=view.spec_hash,
        generation=view.generation,
    )


def instance_row(pod: PodView) -> InstanceRow:
    return InstanceRow(
        pod_uid=pod.uid,
        pod_name=pod.name,
        namespace=pod.namespace,
        ip=pod.ip,
        phase=pod.phase,
        ready=pod.ready,
    )


def snapshot(hub: Hub) -> Snapshot:
    executors = hub.executors()
    known = {(e.namespace, e.name) for e in executors}
    tasks: list[TaskRow] = []
    task_conditions: dict[TaskUid, TaskConditions] = {}
    for view in hub.tasks():
        row, wanted = task_entry(view, known)
        if row is not None:
            tasks.append(row)
        task_conditions[TaskUid(view.uid)] = wanted
    return Snapshot(
        tasks=tasks,
        executors=[executor_row(e) for e in executors],
        instances=instance_rows(executors, hub.pods()),
        task_conditions=task_conditions,
    )


def instance_rows(
    executors: Sequence[ExecutorView], pods: Sequence[PodView]
) -> dict[str, list[InstanceRow]]:
    pods_by_ns: dict[str, list[PodView]] = {}
    for pod in pods:
        pods_by_ns.setdefault(pod.namespace, []).append(pod)
    return {
        e.uid: [instance_row(p) for p in members.selected(e, pods_by_ns.get(e.namespace, []))]
        for e in executors
    }


def task_entry(
    view: TaskView, known: set[tuple[str, str]]
) -> tuple[TaskRow | None, TaskConditions]:
    """One Task's row (None if it cannot be built) and the conditions the mirror derives."""
    row: TaskRow | None
    try:
        row = task_row(view)
    except Exception as exc:  # a bug must cost this Task its row, not every Task theirs
        log.exception("task %s/%s cannot be mirrored", view.namespace, view.name)
        row = None
        problems: tuple[fields.FieldError, ...] = (
            fields.FieldError("spec", f"cannot be mirrored: {exc!r}"),
        )
    else:
        problems = view.task_spec[1]
    missing = [n for n in view.executor_names if (view.namespace, n) not in known]
    wanted = TaskConditions(
        view.namespace,
        view.name,
        view.generation,
        conditions.for_task(view.generation, problems, missing),
    )
    return row, wanted

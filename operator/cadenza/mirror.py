"""The leader's mirror loop: MySQL follows the Tasks, Executors and Pods in the indexes.

On taking over, the leader resyncs the whole mirror from the indexes, so objects created, changed
or deleted while nobody led are reflected. Afterwards every burst of watch events is compared
with what this leader last wrote, and only the objects that changed are written: a status-only
change of a Task (every status write the leader makes comes back as a watch event) writes
nothing and costs no query, however many Tasks there are.

Invariants:
- Every write goes through ``leader_transaction`` with this leader's epoch: a newer leader's
  epoch makes the database refuse it (``Fenced``), and the replica steps down.
- Nothing is written while the lease is in doubt (no recent good heartbeat).
- Conditions derived from the mirror (an Executor that does not exist, a spec with problems) go
  to the status book, which writes them only when they change.
- One object never fails the mirror: rows hold each bad field at its default (within the
  columns' bounds), and a Task whose row cannot be built at all is left out and reported
  ``Ready=False``; every other Task is still written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection, Engine

from cadenza.core import fields
from cadenza.core.ids import Epoch, TaskUid
from cadenza.executors import members
from cadenza.executors import spec as executor_spec
from cadenza.kube import conditions
from cadenza.kube.hub import Hub
from cadenza.kube.views import ExecutorView, PodView, TaskView
from cadenza.settings import Settings
from cadenza.store import fencing
from cadenza.store import mirror as rows

log = logging.getLogger(__name__)

Fenced = fencing.Fenced
DEBOUNCE_SECONDS = 0.2


@dataclass(frozen=True)
class TaskConditions:
    namespace: str
    name: str
    generation: int
    conditions: list[conditions.Condition]


ConditionsHook = Callable[[TaskUid, TaskConditions], None]
WrittenHook = Callable[[list[TaskUid]], None]
"""Told which Tasks' rows a write created or changed (the scheduler's claims wait for them)."""


@dataclass(frozen=True)
class Snapshot:
    """The mirror as it should be, computed purely from the indexes."""

    tasks: list[rows.TaskRow]
    executors: list[rows.ExecutorRow]
    instances: dict[str, list[rows.InstanceRow]]
    task_conditions: dict[TaskUid, TaskConditions] = field(default_factory=dict)


ORIGINAL_NAME_LIMIT = 255
"""The ``tasks.original_name`` column; the admission webhook refuses longer annotations."""


def task_row(view: TaskView) -> rows.TaskRow:
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
    return rows.TaskRow(
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
        spec=_storable(view.spec, problems),
        spec_hash=view.spec_hash,
        valid=invalid is None,
        invalid_reason=invalid,
        executors=tuple(
            rows.ExecutorRef(name=e.name, weight=e.weight, priority=e.priority)
            for e in spec.executors
        ),
    )


def _storable(spec: Mapping[str, Any], problems: Sequence[fields.FieldError]) -> dict[str, Any]:
    """The spec as the ``spec`` JSON column can hold it: a payload nested deeper than the
    database accepts would fail the whole mirror transaction, so it is left out (the Task is
    invalid and never runs anyway)."""
    stored = dict(spec)
    if any(p.field == "spec.payload" for p in problems):
        stored.pop("payload", None)
    return stored


def executor_row(view: ExecutorView) -> rows.ExecutorRow:
    spec = executor_spec.parse_spec(view.spec)
    return rows.ExecutorRow(
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


def instance_row(pod: PodView) -> rows.InstanceRow:
    return rows.InstanceRow(
        pod_uid=pod.uid,
        pod_name=pod.name,
        namespace=pod.namespace,
        ip=pod.ip,
        phase=pod.phase,
        ready=pod.ready,
    )


RowCache = dict[str, tuple[str, int, rows.TaskRow]]
"""A Task's row by uid, with the spec hash and generation it was built from."""


def _cached_row(view: TaskView, cache: RowCache | None) -> rows.TaskRow:
    if cache is None:
        return task_row(view)
    hit = cache.get(view.uid)
    if hit is not None and hit[0] == view.spec_hash and hit[1] == view.generation:
        return hit[2]
    row = task_row(view)
    cache[view.uid] = (view.spec_hash, view.generation, row)
    return row


def snapshot(hub: Hub, cache: RowCache | None = None) -> Snapshot:
    executors = hub.executors()
    known = {(e.namespace, e.name) for e in executors}
    pods_by_ns: dict[str, list[PodView]] = {}
    for pod in hub.pods():
        pods_by_ns.setdefault(pod.namespace, []).append(pod)
    instances = {
        e.uid: [instance_row(p) for p in members.selected(e, pods_by_ns.get(e.namespace, []))]
        for e in executors
    }
    tasks: list[rows.TaskRow] = []
    task_conditions: dict[TaskUid, TaskConditions] = {}
    for view in hub.tasks():
        try:
            row = _cached_row(view, cache)
        except Exception as exc:  # a bug must cost this Task its row, not every Task theirs
            log.exception("task %s/%s cannot be mirrored", view.namespace, view.name)
            problems: tuple[fields.FieldError, ...] = (
                fields.FieldError("spec", f"cannot be mirrored: {exc!r}"),
            )
        else:
            tasks.append(row)
            problems = view.task_spec[1]
        missing = [n for n in view.executor_names if (view.namespace, n) not in known]
        task_conditions[TaskUid(view.uid)] = TaskConditions(
            view.namespace,
            view.name,
            view.generation,
            conditions.for_task(view.generation, problems, missing),
        )
    return Snapshot(
        tasks=tasks,
        executors=[executor_row(e) for e in executors],
        instances=instances,
        task_conditions=task_conditions,
    )


class MirrorLoop:
    """Runs while this replica leads with ``epoch``; cancelled when it stops leading."""

    def __init__(
        self,
        hub: Hub,
        engine: Engine,
        settings: Settings,
        epoch: Epoch,
        on_conditions: ConditionsHook,
        on_written: WrittenHook = lambda _: None,
    ) -> None:
        self._hub = hub
        self._engine = engine
        self._lock_name = settings.leadership.lock_name
        self._epoch = epoch
        self._on_conditions = on_conditions
        self._on_written = on_written
        self._rows: RowCache = {}
        self._written: _Written | None = None
        """What this leader's last write left in MySQL (None before its first resync)."""

    async def run(self, lease_valid: Callable[[], bool], synced: asyncio.Event) -> None:
        """Resync now, set ``synced``, then follow changes until cancelled."""
        changed = self._hub.subscribe()
        try:
            await self.sync(lease_valid)
            synced.set()
            while True:
                await changed.wait()
                await asyncio.sleep(DEBOUNCE_SECONDS)
                changed.clear()
                await self.sync(lease_valid)
        finally:
            self._hub.unsubscribe(changed)

    async def sync(self, lease_valid: Callable[[], bool]) -> None:
        if not lease_valid():
            log.warning("lease in doubt; not writing the mirror")
            return
        snap = snapshot(self._hub, self._rows)
        live = {row.uid for row in snap.tasks} | set(snap.task_conditions)
        for gone in self._rows.keys() - live:
            del self._rows[gone]
        content = _Written.of(snap)
        if content != self._written:
            await asyncio.to_thread(self._write, snap)
            before = self._written.tasks if self._written is not None else {}
            self._written = content
            written = [TaskUid(u) for u, h in content.tasks.items() if before.get(u) != h]
            if written:
                self._on_written(written)
        for uid, wanted in snap.task_conditions.items():
            self._on_conditions(uid, wanted)

    def _write(self, snap: Snapshot) -> None:
        with fencing.leader_transaction(self._engine, self._lock_name, self._epoch) as conn:
            if self._written is None:
                rows.resync(conn, snap.tasks, snap.executors, snap.instances)
            else:
                _write_changes(conn, snap, self._written, _Written.of(snap))


@dataclass(frozen=True)
class _Written:
    """The mirror's content as far as deciding what to write goes."""

    tasks: dict[str, str]
    executors: dict[str, str]
    instances: dict[str, tuple[rows.InstanceRow, ...]]

    @classmethod
    def of(cls, snap: Snapshot) -> _Written:
        return cls(
            tasks={row.uid: row.spec_hash for row in snap.tasks},
            executors={row.uid: row.spec_hash for row in snap.executors},
            instances={
                uid: tuple(sorted(pods, key=lambda p: p.pod_uid))
                for uid, pods in snap.instances.items()
            },
        )


def _write_changes(conn: Connection, snap: Snapshot, before: _Written, after: _Written) -> None:
    """Write what differs between two snapshots: deletions first (a resource re-created under
    the same name must not collide with its predecessor's row), Executors before the Tasks and
    pods that refer to them."""
    for uid in before.tasks.keys() - after.tasks.keys():
        rows.delete_task(conn, TaskUid(uid))
    for uid in before.executors.keys() - after.executors.keys():
        rows.delete_executor(conn, uid)
    for executor in snap.executors:
        if before.executors.get(executor.uid) != executor.spec_hash:
            rows.upsert_executor(conn, executor)
    for task in snap.tasks:
        if before.tasks.get(task.uid) != task.spec_hash:
            rows.upsert_task(conn, task)
    for uid, pods in after.instances.items():
        if before.instances.get(uid) != pods:
            rows.upsert_instances(conn, uid, pods)

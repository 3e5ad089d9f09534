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
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.engine import Connection, Engine

from cadenza.core import fields
from cadenza.core.ids import Epoch, TaskUid
from cadenza.executors import members
from cadenza.executors import spec as executor_spec
from cadenza.kube import conditions
from cadenza.kube.hub import Hub, Key, names
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
        spec_json=_storable(view, problems),
        spec_hash=view.spec_hash,
        valid=invalid is None,
        invalid_reason=invalid,
        executors=tuple(
            rows.ExecutorRef(name=e.name, weight=e.weight, priority=e.priority)
            for e in spec.executors
        ),
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


def snapshot(hub: Hub) -> Snapshot:
    executors = hub.executors()
    known = {(e.namespace, e.name) for e in executors}
    tasks: list[rows.TaskRow] = []
    task_conditions: dict[TaskUid, TaskConditions] = {}
    for view in hub.tasks():
        row, wanted = _task_entry(view, known)
        if row is not None:
            tasks.append(row)
        task_conditions[TaskUid(view.uid)] = wanted
    return Snapshot(
        tasks=tasks,
        executors=[executor_row(e) for e in executors],
        instances=_instances(executors, hub.pods()),
        task_conditions=task_conditions,
    )


def _instances(
    executors: Sequence[ExecutorView], pods: Sequence[PodView]
) -> dict[str, list[rows.InstanceRow]]:
    pods_by_ns: dict[str, list[PodView]] = {}
    for pod in pods:
        pods_by_ns.setdefault(pod.namespace, []).append(pod)
    return {
        e.uid: [instance_row(p) for p in members.selected(e, pods_by_ns.get(e.namespace, []))]
        for e in executors
    }


def _task_entry(
    view: TaskView, known: set[tuple[str, str]]
) -> tuple[rows.TaskRow | None, TaskConditions]:
    """One Task's row (None if it cannot be built) and the conditions the mirror derives."""
    row: rows.TaskRow | None
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


class MirrorLoop:
    """Runs while this replica leads with ``epoch``; cancelled when it stops leading.

    It keeps the mirror as it should be (``_tasks``, ``_executors``, ``_instances``) and what its
    last write left in MySQL (``_written``). A change of a Task re-reads that Task alone; a change
    of an Executor or a pod re-reads the Executors and their pods, and everything only when an
    Executor came or went (a Task's conditions depend on which Executors exist).
    """

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
        self._tasks: dict[TaskUid, rows.TaskRow] = {}
        self._conditions: dict[TaskUid, TaskConditions] = {}
        self._by_name: dict[tuple[str, str], TaskUid] = {}
        self._executors: list[rows.ExecutorRow] = []
        self._known: set[tuple[str, str]] = set()
        self._instances: dict[str, list[rows.InstanceRow]] = {}
        self._written: _Written | None = None
        """What this leader's last write left in MySQL (None before its first resync)."""
        self._whole = True
        """Whether the next sync reads every object (the first, and one after a skipped sync)."""

    async def run(self, lease_valid: Callable[[], bool], synced: asyncio.Event) -> None:
        """Resync now, set ``synced``, then follow changes until cancelled."""
        changes = self._hub.subscribe()
        try:
            await self.sync(lease_valid)
            synced.set()
            while True:
                await changes.wait()
                await asyncio.sleep(DEBOUNCE_SECONDS)
                await self.sync(lease_valid, changes.take())
        finally:
            self._hub.unsubscribe(changes)

    async def sync(self, lease_valid: Callable[[], bool], keys: set[Key] | None = None) -> None:
        """Bring MySQL in line with the objects ``keys`` name (every object when None)."""
        if not lease_valid():
            log.warning("lease in doubt; not writing the mirror")
            self._whole = True  # the changes taken now are not written: read all next time
            return
        if keys is None or self._whole or not self._read_pools(keys):
            touched = self._read_all()
        else:
            touched = self._read_tasks(names("task", keys))
        written = self._written or _Written({}, {}, {})
        delta = _Delta.between(written, self, touched)
        if delta:
            await asyncio.to_thread(self._write, delta)
            self._written = delta.applied_to(written)
            if delta.tasks:
                self._on_written([row.uid for row in delta.tasks])
        for uid in touched:
            wanted = self._conditions.get(uid)
            if wanted is not None:
                self._on_conditions(uid, wanted)
        self._whole = False

    def _read_all(self) -> set[TaskUid]:
        """Every object read again; the Tasks whose row or conditions may have changed."""
        snap = snapshot(self._hub)
        before = set(self._conditions)
        self._tasks = {row.uid: row for row in snap.tasks}
        self._conditions = snap.task_conditions
        self._by_name = {(c.namespace, c.name): uid for uid, c in snap.task_conditions.items()}
        self._executors = snap.executors
        self._known = {(e.namespace, e.name) for e in snap.executors}
        self._instances = snap.instances
        return before | set(self._conditions) | set((self._written or _NONE).tasks)

    def _read_pools(self, keys: set[Key]) -> bool:
        """The Executors and their pods read again if ``keys`` name any; False when the set of
        Executors changed, which changes Tasks' conditions (a missing Executor) and needs every
        Task read again. (The leader writes each Executor's status as its pods' health changes:
        those events must not cost a read of every Task.)"""
        if not any(kind in ("executor", "pod") for kind, _, _ in keys):
            return True
        executors = self._hub.executors()
        if {(e.namespace, e.name) for e in executors} != self._known:
            return False
        self._executors = [executor_row(e) for e in executors]
        self._instances = _instances(executors, self._hub.pods())
        return True

    def _read_tasks(self, names: set[tuple[str, str]]) -> set[TaskUid]:
        """The named Tasks read again (gone ones dropped); their uids, old and new."""
        touched: set[TaskUid] = set()
        for namespace, name in names:
            view = self._hub.task(namespace, name)
            before = self._by_name.pop((namespace, name), None)
            if before is not None and (view is None or view.uid != before):
                self._tasks.pop(before, None)
                self._conditions.pop(before, None)
                touched.add(before)
            if view is None:
                continue
            uid = TaskUid(view.uid)
            row, wanted = _task_entry(view, self._known)
            if row is None:
                self._tasks.pop(uid, None)
            else:
                self._tasks[uid] = row
            self._conditions[uid] = wanted
            self._by_name[(namespace, name)] = uid
            touched.add(uid)
        return touched

    def _write(self, delta: _Delta) -> None:
        with fencing.leader_transaction(self._engine, self._lock_name, self._epoch) as conn:
            if self._written is None:
                rows.resync(conn, list(self._tasks.values()), self._executors, self._instances)
            else:
                delta.write(conn)


@dataclass(frozen=True)
class _Written:
    """The mirror's content as far as deciding what to write goes."""

    tasks: dict[TaskUid, str]
    executors: dict[str, str]
    instances: dict[str, tuple[rows.InstanceRow, ...]]


_NONE = _Written({}, {}, {})


def _pods_key(pods: Sequence[rows.InstanceRow]) -> tuple[rows.InstanceRow, ...]:
    return tuple(sorted(pods, key=lambda p: p.pod_uid))


@dataclass(frozen=True)
class _Delta:
    """What differs between MySQL (as last written) and the mirror as it should be."""

    tasks: list[rows.TaskRow]
    tasks_gone: list[TaskUid]
    executors: list[rows.ExecutorRow]
    executors_gone: list[str]
    instances: dict[str, tuple[rows.InstanceRow, ...]]
    first: bool

    def __bool__(self) -> bool:
        return self.first or any(
            (self.tasks, self.tasks_gone, self.executors, self.executors_gone, self.instances)
        )

    @classmethod
    def between(cls, written: _Written, loop: MirrorLoop, touched: set[TaskUid]) -> _Delta:
        wanted = loop._tasks
        executors = {e.uid: e for e in loop._executors}
        instances = {uid: _pods_key(pods) for uid, pods in loop._instances.items()}
        return cls(
            tasks=[
                wanted[u]
                for u in touched
                if u in wanted and written.tasks.get(u) != wanted[u].spec_hash
            ],
            tasks_gone=[u for u in touched if u in written.tasks and u not in wanted],
            executors=[e for e in loop._executors if written.executors.get(e.uid) != e.spec_hash],
            executors_gone=[u for u in written.executors if u not in executors],
            instances={u: p for u, p in instances.items() if written.instances.get(u) != p},
            first=loop._written is None,
        )

    def applied_to(self, written: _Written) -> _Written:
        tasks = dict(written.tasks)
        for uid in self.tasks_gone:
            tasks.pop(uid, None)
        tasks.update((row.uid, row.spec_hash) for row in self.tasks)
        executors = {u: h for u, h in written.executors.items() if u not in self.executors_gone}
        executors.update((row.uid, row.spec_hash) for row in self.executors)
        instances = {u: p for u, p in written.instances.items() if u in executors}
        instances.update(self.instances)
        return _Written(tasks, executors, instances)

    def write(self, conn: Connection) -> None:
        """Deletions first (a resource re-created under the same name must not collide with its
        predecessor's row), Executors before the Tasks and pods that refer to them."""
        for task_uid in self.tasks_gone:
            rows.delete_task(conn, task_uid)
        for executor_uid in self.executors_gone:
            rows.delete_executor(conn, executor_uid)
        for executor in self.executors:
            rows.upsert_executor(conn, executor)
        rows.upsert_tasks(conn, self.tasks)
        for executor_uid, pods in self.instances.items():
            rows.upsert_instances(conn, executor_uid, pods)

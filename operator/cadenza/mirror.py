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
- One object never fails the mirror: the rows come from :mod:`cadenza.mirror_snapshot`, which
  holds each bad field at its default and leaves out (``Ready=False``) a Task whose row cannot
  be built at all; every other Task is still written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Connection, Engine

from cadenza.core.ids import Epoch, TaskUid
from cadenza.kube.hub import Hub, Key, names
from cadenza.mirror_snapshot import (
    TaskConditions,
    executor_row,
    instance_rows,
    snapshot,
    task_entry,
)
from cadenza.settings import Settings
from cadenza.store import fencing, mirror_tasks
from cadenza.store import mirror as rows
from cadenza.store.mirror_rows import ExecutorRow, InstanceRow, TaskRow

log = logging.getLogger(__name__)

Fenced = fencing.Fenced
DEBOUNCE_SECONDS = 0.2

ConditionsHook = Callable[[TaskUid, TaskConditions], None]
WrittenHook = Callable[[list[TaskUid]], None]
"""Told which Tasks' rows a write created or changed (the scheduler's claims wait for them)."""


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
        self._tasks: dict[TaskUid, TaskRow] = {}
        self._conditions: dict[TaskUid, TaskConditions] = {}
        self._by_name: dict[tuple[str, str], TaskUid] = {}
        self._executors: list[ExecutorRow] = []
        self._known: set[tuple[str, str]] = set()
        self._instances: dict[str, list[InstanceRow]] = {}
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
        self._instances = instance_rows(executors, self._hub.pods())
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
            row, wanted = task_entry(view, self._known)
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
    instances: dict[str, tuple[InstanceRow, ...]]


_NONE = _Written({}, {}, {})


def _pods_key(pods: Sequence[InstanceRow]) -> tuple[InstanceRow, ...]:
    return tuple(sorted(pods, key=lambda p: p.pod_uid))


@dataclass(frozen=True)
class _Delta:
    """What differs between MySQL (as last written) and the mirror as it should be."""

    tasks: list[TaskRow]
    tasks_gone: list[TaskUid]
    executors: list[ExecutorRow]
    executors_gone: list[str]
    instances: dict[str, tuple[InstanceRow, ...]]
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
        mirror_tasks.upsert_tasks(conn, self.tasks)
        for executor_uid, pods in self.instances.items():
            rows.upsert_instances(conn, executor_uid, pods)

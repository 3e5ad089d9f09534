"""The replica's live picture of the cluster, shared by the kopf handlers and the leader's work.

kopf owns the indexes (filled by ``@kopf.index`` handlers on every replica); the hub keeps
references to them, and the same handlers (``@kopf.on.event`` handlers for deletions) tell every
subscriber (the leader's mirror, scheduler and executor pool each hold :class:`Changes` of their
own) which object changed.
Everything here runs on the event loop: no locks are needed, and none of it may block.

Invariants:
- A subscriber woken for an object finds it in the index as it is now (or finds it gone): kopf
  stores an index handler's value in the same step of the loop in which the handler returns
  (nothing awaits in between; ``tests/unit/test_kopf_registry.py`` holds kopf to it), and drops
  a deleted object from the index before it calls the ``on.event`` handlers.
- A subscriber is told every change's key until it takes them: with thousands of objects a
  subscriber re-reads only those, never every object per event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cadenza.kube.views import ExecutorView, PodView, TaskView

Kind = Literal["task", "executor", "pod"]
Key = tuple[Kind, str, str]
"""A changed object: its kind, namespace and name."""
TASKS_INDEX, EXECUTORS_INDEX, PODS_INDEX = "cadenza_tasks", "cadenza_executors", "cadenza_pods"


class Changes:
    """One subscriber's view of what changed: an event to wait on and the keys since the last
    :meth:`take`."""

    def __init__(self, kinds: frozenset[Kind] = frozenset(("task", "executor", "pod"))) -> None:
        self.kinds = kinds
        """The kinds of object this subscriber is told of."""
        self._event = asyncio.Event()
        self._keys: set[Key] = set()

    def add(self, key: Key) -> None:
        self._keys.add(key)
        self._event.set()

    def wake(self) -> None:
        """Wake the subscriber without a key (something of its own to look at)."""
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()

    def take(self) -> set[Key]:
        """The keys changed since the last take; the subscriber is awake no longer."""
        self._event.clear()
        keys, self._keys = self._keys, set()
        return keys


def names(kind: Kind, keys: set[Key]) -> set[tuple[str, str]]:
    """The namespace and name of each of ``keys`` of one kind."""
    return {(namespace, name) for k, namespace, name in keys if k == kind}


@dataclass
class Hub:
    indexes: Mapping[str, Any] = field(default_factory=dict)
    """kopf's live ``Index`` objects by name, attached at operator startup."""

    subscribers: list[Changes] = field(default_factory=list)
    listed: bool = False
    """Whether every object that existed at start is in the indexes (see ``ListingCheck``)."""

    def attach(self, indexes: Mapping[str, Any]) -> None:
        self.indexes = {k: indexes[k] for k in (TASKS_INDEX, EXECUTORS_INDEX, PODS_INDEX)}

    def subscribe(self, *kinds: Kind) -> Changes:
        """The changes of every watched object (of ``kinds`` only, if given) from now on, until
        :meth:`unsubscribe`."""
        changes = Changes(frozenset(kinds)) if kinds else Changes()
        self.subscribers.append(changes)
        return changes

    def unsubscribe(self, changes: Changes) -> None:
        if changes in self.subscribers:
            self.subscribers.remove(changes)

    def notify(self, kind: Kind, namespace: str, name: str) -> None:
        key: Key = (kind, namespace, name)
        for changes in self.subscribers:
            if kind in changes.kinds:
                changes.add(key)

    def _values(self, index: str, key: Any = None) -> Iterator[Any]:
        idx = self.indexes.get(index)
        if idx is None:
            return
        if key is not None:
            yield from idx.get(key, ())
            return
        for store in idx.values():
            yield from store

    def tasks(self) -> list[TaskView]:
        return list(self._values(TASKS_INDEX))

    def task(self, namespace: str, name: str) -> TaskView | None:
        return next(iter(self._values(TASKS_INDEX, (namespace, name))), None)

    def executors(self) -> list[ExecutorView]:
        return list(self._values(EXECUTORS_INDEX))

    def executor(self, namespace: str, name: str) -> ExecutorView | None:
        return next(iter(self._values(EXECUTORS_INDEX, (namespace, name))), None)

    def pods(self, namespace: str | None = None) -> list[PodView]:
        return list(self._values(PODS_INDEX, namespace))

    def uids(self) -> set[str]:
        return {v.uid for index in self.indexes for v in self._values(index)}

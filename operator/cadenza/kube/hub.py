"""The replica's live picture of the cluster, shared by the kopf handlers and the leader's work.

kopf owns the indexes (filled by ``@kopf.index`` handlers on every replica); the hub keeps
references to them, and ``@kopf.on.event`` handlers wake every subscriber (the leader's mirror,
scheduler and executor pool each hold an event of their own) when something changed. Everything
here runs on the event loop: no locks are needed, and none of it may block.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cadenza.kube.views import ExecutorView, PodView, TaskView

Kind = Literal["task", "executor", "pod"]
TASKS_INDEX, EXECUTORS_INDEX, PODS_INDEX = "cadenza_tasks", "cadenza_executors", "cadenza_pods"


@dataclass
class Hub:
    indexes: Mapping[str, Any] = field(default_factory=dict)
    """kopf's live ``Index`` objects by name, attached at operator startup."""

    subscribers: list[asyncio.Event] = field(default_factory=list)
    listed: bool = False
    """Whether every object that existed at start is in the indexes (see ``ListingCheck``)."""

    def attach(self, indexes: Mapping[str, Any]) -> None:
        self.indexes = {k: indexes[k] for k in (TASKS_INDEX, EXECUTORS_INDEX, PODS_INDEX)}

    def subscribe(self) -> asyncio.Event:
        """An event set whenever a watched object changes; the subscriber clears it."""
        event = asyncio.Event()
        self.subscribers.append(event)
        return event

    def unsubscribe(self, event: asyncio.Event) -> None:
        if event in self.subscribers:
            self.subscribers.remove(event)

    def notify(self, kind: Kind, namespace: str, name: str) -> None:
        for event in self.subscribers:
            event.set()

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

"""Task conditions the leader derives from the mirror, and their writer.

``Ready`` says whether the Task can be scheduled at all (its schedule and time zone parse);
``ExecutorAvailable`` whether every Executor it names exists. A Task that reached the cluster
invalid (no admission webhook installed) gets ``Ready=False`` and a Warning event, never a crash.

The writer patches ``status.conditions`` only when a condition's status, reason or message
changed, keeps ``lastTransitionTime`` of conditions whose status did not change, and emits a
Warning event when a condition turns bad. WARNING: status patches and events are blocking calls
of the Kubernetes client and run in threads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import kubernetes

log = logging.getLogger(__name__)

GROUP, VERSION = "cadenza.dev", "v1alpha1"


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str
    observed_generation: int


def for_task(generation: int, invalid_reason: str | None, missing: list[str]) -> list[Condition]:
    ready = (
        Condition("Ready", "False", "InvalidSchedule", invalid_reason, generation)
        if invalid_reason
        else Condition("Ready", "True", "Valid", "schedule and time zone are valid", generation)
    )
    available = (
        Condition(
            "ExecutorAvailable",
            "False",
            "ExecutorNotFound",
            f"spec.executors: no Executor named {', '.join(sorted(missing))} in this namespace",
            generation,
        )
        if missing
        else Condition(
            "ExecutorAvailable", "True", "ExecutorsFound", "every named Executor exists", generation
        )
    )
    return [ready, available]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ConditionWriter:
    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self._custom = kubernetes.client.CustomObjectsApi(client)
        self._core = kubernetes.client.CoreV1Api(client)
        self._written: dict[tuple[str, str], list[Condition]] = {}

    async def write_all(
        self,
        wanted: Mapping[tuple[str, str], list[Condition]],
        lease_valid: Callable[[], bool],
    ) -> None:
        for key in set(self._written) - set(wanted):
            del self._written[key]
        for key, conds in wanted.items():
            if self._written.get(key) == conds:
                continue
            if not lease_valid():
                return
            try:
                await asyncio.to_thread(self._write, key, conds)
                self._written[key] = conds
            except kubernetes.client.ApiException as exc:
                if exc.status != 404:
                    log.warning("writing conditions of task %s/%s failed: %s", *key, exc.reason)

    def _write(self, key: tuple[str, str], conds: list[Condition]) -> None:
        namespace, name = key
        current: dict[str, Any] = self._custom.get_namespaced_custom_object(  # type: ignore[assignment]
            GROUP, VERSION, namespace, "tasks", name
        )
        existing = {c["type"]: c for c in (current.get("status") or {}).get("conditions") or []}
        merged: list[dict[str, Any]] = []
        turned_bad: list[Condition] = []
        for c in conds:
            old = existing.pop(c.type, None)
            same_status = old is not None and old.get("status") == c.status
            if c.status == "False" and not (same_status and old and old.get("reason") == c.reason):
                turned_bad.append(c)
            merged.append(
                {
                    "type": c.type,
                    "status": c.status,
                    "reason": c.reason,
                    "message": c.message,
                    "observedGeneration": c.observed_generation,
                    "lastTransitionTime": old["lastTransitionTime"]
                    if same_status and old
                    else _now(),
                }
            )
        merged.extend(existing.values())  # conditions owned by other parts of the operator
        if merged == (current.get("status") or {}).get("conditions"):
            return
        self._custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "tasks", name, {"status": {"conditions": merged}}
        )
        for c in turned_bad:
            self._event(current, c)

    def _event(self, task: Mapping[str, Any], condition: Condition) -> None:
        meta = task["metadata"]
        now = dt.datetime.now(dt.UTC)
        event = kubernetes.client.CoreV1Event(
            metadata=kubernetes.client.V1ObjectMeta(generate_name=f"{meta['name']}."),
            involved_object=kubernetes.client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}",
                kind="Task",
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta["uid"],
            ),
            reason=condition.reason,
            message=condition.message,
            type="Warning",
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=kubernetes.client.V1EventSource(component="cadenza"),
        )
        try:
            self._core.create_namespaced_event(meta["namespace"], event)
        except kubernetes.client.ApiException as exc:
            log.warning("posting event %s failed: %s", condition.reason, exc.reason)

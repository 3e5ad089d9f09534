"""The REST API's view of an Executor object: its spec's endpoints with their health (from
``status.pods``, written by the leader) and last heartbeat (from ``executor_heartbeats``).
Pure: the handlers read the object and the heartbeats and call these."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cadenza.api.executor_models import EndpointOut, ExecutorOut


def executor(executor: Mapping[str, Any], beats: Mapping[tuple[str, str], Any]) -> ExecutorOut:
    meta, spec = executor["metadata"], executor.get("spec") or {}
    status = executor.get("status") or {}
    entries = [e for e in spec.get("endpoints") or [] if isinstance(e, Mapping)]
    return ExecutorOut(
        name=meta["name"], namespace=meta["namespace"], uid=meta["uid"],
        selector=spec.get("selector"), heartbeatSeconds=spec.get("heartbeatSeconds"),
        endpoints=[endpoint(executor, str(e.get("instanceId")), beats) for e in entries],
        pods=list(status.get("pods") or []), totalPods=int(status.get("totalPods") or 0),
        healthyPods=int(status.get("healthyPods") or 0),
        conditions=list(status.get("conditions") or []),
    )  # fmt: skip


def endpoint(
    executor: Mapping[str, Any], instance: str, beats: Mapping[tuple[str, str], Any]
) -> EndpointOut:
    meta, spec = executor["metadata"], executor.get("spec") or {}
    entry = next(
        e for e in spec.get("endpoints") or []
        if isinstance(e, Mapping) and e.get("instanceId") == instance
    )  # fmt: skip
    pod: Mapping[str, Any] = next(
        (p for p in (executor.get("status") or {}).get("pods") or [] if p.get("name") == instance),
        {},
    )
    return EndpointOut(
        instanceId=instance, baseUrl=entry.get("baseUrl", ""),
        healthCheckUrl=entry.get("healthCheckUrl"), state=entry.get("state", "Online"),
        lastHeartbeat=beats.get((meta["name"], instance)), healthy=pod.get("healthy"),
        inFlight=pod.get("inFlight"), lastError=pod.get("lastError"),
    )  # fmt: skip

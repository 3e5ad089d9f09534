"""What a registration, a status change and a deregistration do to an Executor object. Pure: the
handlers in :mod:`cadenza.api.executors` read the object, call these, and write it back.

Invariants:
- An Executor's endpoints are keyed by instance id: registering an instance again replaces its
  entry (and brings it back ``Online``), never adds a second one.
- An Executor created by a registration names the dispatch-token Secret the operator makes and
  owns for every Executor (:func:`token_secret_name`, :mod:`cadenza.kube.token_secrets`).
- :func:`without_endpoint` says when the Executor is left with nothing to serve (no endpoint and
  no selector): the caller deletes it then.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cadenza.api.executor_models import RegisterBody
from cadenza.api.mapping import API_VERSION, ORIGINAL_NAME
from cadenza.kube.token_secrets import TOKEN_KEY as TOKEN_KEY
from cadenza.kube.token_secrets import secret_name as token_secret_name

DEFAULT_HEARTBEAT_SECONDS = 10
STATES = {"online": "Online", "draining": "Draining", "offline": "Offline"}


def endpoint_entry(body: RegisterBody) -> dict[str, Any]:
    entry = {"instanceId": body.instance_id, "baseUrl": body.base_url, "state": "Online"}
    if body.health_check_url is not None:
        entry["healthCheckUrl"] = body.health_check_url
    return entry


def new_executor(body: RegisterBody, namespace: str, name: str) -> dict[str, Any]:
    """The Executor a first registration creates: this endpoint, heartbeats, its own token."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Executor",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {ORIGINAL_NAME: body.name},
        },
        "spec": {
            "endpoints": [endpoint_entry(body)],
            "heartbeatSeconds": body.heartbeat_seconds or DEFAULT_HEARTBEAT_SECONDS,
            "tokenSecretRef": {"name": token_secret_name(name), "key": TOKEN_KEY},
        },
    }


def with_endpoint(executor: Mapping[str, Any], body: RegisterBody) -> dict[str, Any]:
    """The Executor with the body's endpoint added or replaced, and heartbeats required."""
    spec = dict(executor.get("spec") or {})
    entry = endpoint_entry(body)
    others = [e for e in _endpoints(spec) if e.get("instanceId") != body.instance_id]
    spec["endpoints"] = [*others, entry]
    if body.heartbeat_seconds is not None:
        spec["heartbeatSeconds"] = body.heartbeat_seconds
    spec.setdefault("heartbeatSeconds", DEFAULT_HEARTBEAT_SECONDS)
    return {**executor, "spec": spec}


def with_state(executor: Mapping[str, Any], instance_id: str, state: str) -> dict[str, Any] | None:
    """The Executor with the endpoint's ``state`` set; None when it has no such endpoint."""
    spec = dict(executor.get("spec") or {})
    found = _endpoints(spec)
    if not any(e.get("instanceId") == instance_id for e in found):
        return None
    spec["endpoints"] = [
        {**e, "state": state} if e.get("instanceId") == instance_id else e for e in found
    ]
    return {**executor, "spec": spec}


def without_endpoint(executor: Mapping[str, Any], instance_id: str) -> tuple[dict[str, Any], bool]:
    """The Executor without the endpoint, and whether it is then empty (no endpoint, no
    selector)."""
    spec = dict(executor.get("spec") or {})
    spec["endpoints"] = [e for e in _endpoints(spec) if e.get("instanceId") != instance_id]
    empty = not spec["endpoints"] and not spec.get("selector")
    if not spec["endpoints"]:
        del spec["endpoints"]
    return {**executor, "spec": spec}, empty


def has_endpoint(executor: Mapping[str, Any], instance_id: str) -> bool:
    spec = executor.get("spec") or {}
    return any(e.get("instanceId") == instance_id for e in _endpoints(spec))


def serving(task: Mapping[str, Any], executor: str) -> dict[str, Any] | None:
    """The Task with ``executor`` added to ``spec.executors``; None when it is there already."""
    spec = dict(task.get("spec") or {})
    entries = [e for e in spec.get("executors") or [] if isinstance(e, Mapping)]
    if any(e.get("name") == executor for e in entries):
        return None
    spec["executors"] = [*entries, {"name": executor}]
    return {**task, "spec": spec}


def _endpoints(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = spec.get("endpoints")
    return [dict(e) for e in raw if isinstance(e, Mapping)] if isinstance(raw, list) else []

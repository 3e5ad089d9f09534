"""Executors outside the cluster: an Executor's ``spec.endpoints``, read and turned into members.

An endpoint is a member of its Executor's pool like a selected pod: the pool probes it, the
dispatcher sends it runs, the mirror keeps its ``executor_instances`` row. So that all of them
keep speaking of pods, each endpoint is presented as a :class:`~cadenza.kube.views.PodView`
(:func:`as_pod`) named after its instance id, with a uid derived from the Executor's uid and the
instance id; the pool reaches it at its own base and health URLs instead of the pod IP.

Invariants:
- Pure: no I/O. :func:`read_all` returns endpoints within the CRD's bounds or raises
  :class:`~cadenza.core.fields.FieldError` naming the field.
- :func:`member_uid` is a function of (Executor uid, instance id) only, so every replica and
  every leader derive the same row key, and re-registering an instance keeps its row.
- An endpoint whose ``state`` is not ``Online`` is presented not Ready: it is probed (status
  shows it) but takes no new run. ``Offline`` is presented as a pod that is not Running, so it is
  not probed either.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from cadenza.core import fields
from cadenza.core.fields import FieldError
from cadenza.kube.views import PodView

MAX_ENDPOINTS = 256
URL_MAX_LENGTH = 2048
INSTANCE_ID = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
BASE_URL = re.compile(r"https?://[^\s/?#]+(/[^\s?#]*)?")
HEALTH_URL = re.compile(r"https?://[^\s/?#]+(/[^\s#]*)?")
STATES = ("Online", "Draining", "Offline")
MISSED_HEARTBEATS = 3
"""An endpoint silent for this many ``heartbeatSeconds`` is unhealthy."""
_NAMESPACE = uuid.UUID("6f1b7a52-3c0e-4f6e-9a51-0c2d7e1f5a10")
_IP_MAX_LENGTH = 45  # executor_instances.ip


@dataclasses.dataclass(frozen=True)
class Endpoint:
    instance_id: str
    base_url: str
    health_url: str | None = None
    """None: the base URL plus the Executor's ``healthCheck.path``."""
    state: str = "Online"

    def probe_url(self, path: str) -> str:
        return self.health_url or self.base_url.rstrip("/") + path


def read_all(raw: Any) -> tuple[Endpoint, ...]:
    """``spec.endpoints`` (absent: none)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise FieldError("spec.endpoints", f"must be a list, got {fields.show(raw)}")
    if len(raw) > MAX_ENDPOINTS:
        raise FieldError("spec.endpoints", f"must hold at most {MAX_ENDPOINTS} entries")
    found = [read_one(item, f"spec.endpoints[{i}]") for i, item in enumerate(raw)]
    seen: set[str] = set()
    for i, endpoint in enumerate(found):
        if endpoint.instance_id in seen:
            raise FieldError(
                f"spec.endpoints[{i}].instanceId", f"{endpoint.instance_id!r} is listed twice"
            )
        seen.add(endpoint.instance_id)
    return tuple(found)


def read_one(raw: Any, path: str) -> Endpoint:
    item = fields.mapping(raw, path)
    health = item.get("healthCheckUrl")
    state = item.get("state")
    return Endpoint(
        instance_id=fields.text(item.get("instanceId"), f"{path}.instanceId", 1, 63, INSTANCE_ID),
        base_url=url(item.get("baseUrl"), f"{path}.baseUrl", BASE_URL, need_host=False),
        health_url=(
            None
            if health is None
            else url(health, f"{path}.healthCheckUrl", HEALTH_URL, need_host=False)
        ),
        state="Online" if state is None else fields.choice(state, f"{path}.state", STATES),
    )


def url(raw: Any, field: str, pattern: re.Pattern[str], need_host: bool = True) -> str:
    """An http(s) URL as the CRD's pattern accepts it; with ``need_host`` (the REST API's
    stricter check) also one whose host parses and whose port, if any, is one a client can
    connect to (the pattern lets ``http://host:port/`` and ``:99999`` through)."""
    value = fields.text(raw, field, 1, URL_MAX_LENGTH)
    if not pattern.fullmatch(value) or (need_host and not _host(value)):
        raise FieldError(field, f"must be an http:// or https:// URL with a host, got {value!r}")
    if need_host and _port(value) == 0:
        raise FieldError(field, f"the port of {value[:80]!r} must be a number from 1 to 65535")
    return value


def _port(value: str) -> int | None:
    """The URL's port (None when it names none); 0 when it is not one."""
    try:
        return urllib.parse.urlsplit(value).port
    except ValueError:  # not a number, or out of range
        return 0


def _host(value: str) -> str:
    """The URL's host name, else its authority; "" when it has neither."""
    try:
        parts = urllib.parse.urlsplit(value)
        return parts.hostname or parts.netloc
    except ValueError:  # e.g. an unbalanced '[' in the host
        return ""


def member_uid(executor_uid: str, instance_id: str) -> str:
    """The endpoint's stand-in for a pod uid (36 characters, like a Kubernetes uid)."""
    return str(uuid.uuid5(_NAMESPACE, f"{executor_uid}/{instance_id}"))


def as_pod(namespace: str, executor_uid: str, endpoint: Endpoint) -> PodView:
    host = _host(endpoint.base_url) or "?"
    return PodView(
        uid=member_uid(executor_uid, endpoint.instance_id),
        namespace=namespace,
        name=endpoint.instance_id,
        labels={},
        ip=host[:_IP_MAX_LENGTH],
        phase="Pending" if endpoint.state == "Offline" else "Running",
        ready=endpoint.state == "Online",
        terminating=False,
    )


def as_pods(namespace: str, executor_uid: str, spec: Mapping[str, Any]) -> list[PodView]:
    """The endpoints of an Executor's raw spec as members; none when they cannot be read (the
    spec's reader reports why)."""
    try:
        found: Sequence[Endpoint] = read_all(spec.get("endpoints"))
    except FieldError:
        return []
    return [as_pod(namespace, executor_uid, e) for e in found]

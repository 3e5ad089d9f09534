"""From the REST API's Task bodies to Task objects and back. Pure: no I/O, no clock.

The original system's spellings become Cadenza's (``parallel`` → ``Parallel``, ``round_robin``
→ ``RoundRobin``, ``retries: 2`` → ``retry.maxAttempts: 3``, ``enabled: false`` →
``suspend: true``), an original name becomes a Kubernetes name by the rule of
``docs/resources.md`` (lowercase, ``_`` → ``-``, the original kept in the annotation
``cadenza.dev/original-name``), and the resulting spec is checked with the engine's own reader
(:func:`cadenza.core.taskspec.read_task_spec`), so the API refuses exactly what the engine could
not run, naming the field as the client spelled it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from cadenza.api.models import SPELLINGS, TaskBody, TaskFields, TaskOut
from cadenza.core import taskspec
from cadenza.core.fields import FieldError

ORIGINAL_NAME = "cadenza.dev/original-name"
DESCRIPTION = "cadenza.dev/description"
TRIGGER = "cadenza.dev/trigger"
API_VERSION = "cadenza.dev/v1alpha1"
NEXT_FIRE_TIMES = 5

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")

MODES = {"parallel": "Parallel", "sequential": "Sequential", "skip": "Skip"}
STRATEGIES = {
    "round_robin": "RoundRobin", "weighted": "Weighted", "random": "Random",
    "sticky": "Sticky", "least_loaded": "LeastLoaded",
}  # fmt: skip

# Body field → spec key, for the fields whose value passes through unchanged.
_SAME = {
    "cron_expression": "schedule", "schedule": "schedule", "time_zone": "timeZone",
    "timeZone": "timeZone", "handler": "handler", "payload": "payload",
    "timeout_seconds": "timeoutSeconds", "timeoutSeconds": "timeoutSeconds",
    "suspend": "suspend", "maxConcurrent": "maxConcurrent",
    "startingDeadlineSeconds": "startingDeadlineSeconds", "misfirePolicy": "misfirePolicy",
    "maxMisfireRuns": "maxMisfireRuns",
}  # fmt: skip
_SPEC_TO_BODY = {"schedule": ("cron_expression", "schedule"), "suspend": ("enabled", "suspend")}
_SPEC_TO_BODY.update({second: (first, second) for first, second in SPELLINGS if first != "enabled"})
_SPEC_TO_BODY["retry"] = ("retries", "retry")


def kube_name(name: str, field: str = "name") -> str:
    """The Kubernetes name of an original name (``test_task`` → ``test-task``)."""
    mapped = name.lower().replace("_", "-")
    if len(mapped) > 253 or not _DNS_SUBDOMAIN.fullmatch(mapped):
        raise FieldError(
            field,
            f"{name!r} cannot be a Task name: after lowercasing and replacing '_' by '-' it must"
            " be 1-253 lowercase letters, digits, '-' or '.', starting and ending alphanumeric",
        )
    return mapped


def namespace_name(namespace: str, field: str = "namespace") -> str:
    if len(namespace) > 63 or not _DNS_LABEL.fullmatch(namespace):
        raise FieldError(field, f"{namespace!r} is not a namespace name (a DNS-1123 label)")
    return namespace


def spec_fragment(body: TaskFields) -> dict[str, Any]:
    """The spec keys the body sets, in Cadenza's spelling (only the fields given)."""
    given = body.model_fields_set
    spec: dict[str, Any] = {}
    for key, target in _SAME.items():
        if key in given:
            spec[target] = getattr(body, key)
    for key in ("execution_mode", "executionMode"):
        if key in given and getattr(body, key) is not None:
            spec["executionMode"] = MODES.get(getattr(body, key), getattr(body, key))
    for key in ("load_balance_strategy", "loadBalanceStrategy"):
        if key in given and getattr(body, key) is not None:
            value = getattr(body, key)
            spec["loadBalanceStrategy"] = STRATEGIES.get(value, value)
    if "enabled" in given and body.enabled is not None:
        spec["suspend"] = not body.enabled
    if "retries" in given and body.retries is not None:
        spec["retry"] = {"maxAttempts": body.retries + 1}
    if "retry" in given and body.retry is not None:
        spec["retry"] = body.retry.model_dump(exclude_none=True)
    if "history" in given and body.history is not None:
        spec["history"] = body.history.model_dump(exclude_none=True)
    if "executors" in given and body.executors is not None:
        spec["executors"] = [
            {"name": e} if isinstance(e, str) else e.model_dump(exclude_none=True)
            for e in body.executors
        ]
    return {k: v for k, v in spec.items() if v is not None}


def manifest(body: TaskBody, namespace: str, default_executor: str) -> dict[str, Any]:
    """The Task object a create (or a replace) body describes."""
    assert body.name is not None
    name = kube_name(body.name)
    spec = spec_fragment(body)
    spec.setdefault("executors", [{"name": default_executor}])
    annotations = {ORIGINAL_NAME: body.name}
    if body.description is not None:
        annotations[DESCRIPTION] = body.description
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "annotations": annotations}
    if body.labels:
        metadata["labels"] = dict(body.labels)
    return {"apiVersion": API_VERSION, "kind": "Task", "metadata": metadata, "spec": spec}


def merged(current: Mapping[str, Any], fragment: Mapping[str, Any]) -> dict[str, Any]:
    """``current`` spec with ``fragment`` applied: top-level keys replaced, ``retry`` and
    ``history`` merged one level (``retries: 2`` keeps the backoff)."""
    spec = dict(current)
    for key, value in fragment.items():
        old = spec.get(key)
        if key in ("retry", "history") and isinstance(old, Mapping):
            spec[key] = {**old, **value}
        else:
            spec[key] = value
    return spec


def check(spec: Mapping[str, Any], given: Collection[str]) -> None:
    """Raise FieldError, named as the client spelled it, for the first problem the engine's
    reader finds in ``spec``."""
    _, problems = taskspec.read_task_spec(dict(spec))
    if not problems:
        return
    first = problems[0]
    key = taskspec.top_level_key(first.field)
    rest = first.field.removeprefix("spec").removeprefix(".").removeprefix(key)
    names = _SPEC_TO_BODY.get(key, (key,))
    body_field = next((n for n in names if n in given), names[-1])
    if body_field in ("retries", "enabled"):  # one number or flag: the sub-path means nothing
        rest = ""
    raise FieldError(f"{body_field}{rest}" if key else "body", first.reason)


def view(task: Mapping[str, Any], now: datetime) -> TaskOut:
    """The API's view of a Task object, with its next fire times after ``now``."""
    metadata = task.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    spec = dict(task.get("spec") or {})
    return TaskOut(
        name=str(metadata.get("name", "")),
        namespace=str(metadata.get("namespace", "")),
        originalName=annotations.get(ORIGINAL_NAME),
        description=annotations.get(DESCRIPTION),
        uid=str(metadata.get("uid", "")),
        resourceVersion=str(metadata.get("resourceVersion", "")),
        createdAt=metadata.get("creationTimestamp"),
        labels=dict(metadata.get("labels") or {}),
        spec=spec,
        status=dict(task.get("status") or {}),
        nextFireTimes=next_fire_times(spec, now),
    )


def next_fire_times(spec: Mapping[str, Any], now: datetime, count: int = NEXT_FIRE_TIMES
                    ) -> list[datetime]:  # fmt: skip
    parsed, problems = taskspec.read_task_spec(dict(spec))
    if parsed.suspend or parsed.schedule is None or problems:
        return []
    times: list[datetime] = []
    after = now
    for _ in range(count):
        try:
            after = parsed.schedule.next_fire(after)
        except (ValueError, OverflowError):
            break
        times.append(after)
    return times

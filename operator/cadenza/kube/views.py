"""Compact, immutable views of the watched objects, as kept in the replicas' indexes.

A view holds what the operator needs and nothing else, so memory stays flat however large the
objects' status grows. ``spec_hash`` covers the spec and the annotations that change behaviour,
never the status, so a status-only change of a Task is not a change of its view's hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ORIGINAL_NAME = "cadenza.dev/original-name"
TRIGGER = "cadenza.dev/trigger"
WEIGHT = "cadenza.dev/weight"
"""Pod annotation: this pod's weight for the Weighted strategy, instead of its Executor entry's."""


def spec_hash(spec: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> str:
    canonical = json.dumps([spec, extra or {}], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class TaskView:
    uid: str
    namespace: str
    name: str
    generation: int
    spec: Mapping[str, Any]
    original_name: str | None
    trigger: str | None
    spec_hash: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> TaskView:
        meta = body["metadata"]
        annotations = meta.get("annotations") or {}
        spec = dict(body.get("spec") or {})
        original = annotations.get(ORIGINAL_NAME)
        return cls(
            uid=meta["uid"],
            namespace=meta["namespace"],
            name=meta["name"],
            generation=int(meta.get("generation") or 0),
            spec=spec,
            original_name=original,
            trigger=annotations.get(TRIGGER),
            spec_hash=spec_hash(spec, {ORIGINAL_NAME: original}),
        )

    @property
    def executor_names(self) -> list[str]:
        return [str(e["name"]) for e in self.spec.get("executors") or []]


@dataclass(frozen=True)
class ExecutorView:
    uid: str
    namespace: str
    name: str
    generation: int
    spec: Mapping[str, Any]
    spec_hash: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ExecutorView:
        meta = body["metadata"]
        spec = dict(body.get("spec") or {})
        return cls(
            uid=meta["uid"],
            namespace=meta["namespace"],
            name=meta["name"],
            generation=int(meta.get("generation") or 0),
            spec=spec,
            spec_hash=spec_hash(spec),
        )

    @property
    def selector(self) -> Mapping[str, Any]:
        return self.spec.get("selector") or {}


@dataclass(frozen=True)
class PodView:
    uid: str
    namespace: str
    name: str
    labels: Mapping[str, str]
    ip: str | None
    phase: str
    ready: bool
    terminating: bool
    weight: int | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PodView:
        meta = body["metadata"]
        status = body.get("status") or {}
        conditions = status.get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        return cls(
            uid=meta["uid"],
            namespace=meta["namespace"],
            name=meta["name"],
            labels=dict(meta.get("labels") or {}),
            ip=status.get("podIP") or None,
            phase=status.get("phase") or "Pending",
            ready=ready,
            terminating=meta.get("deletionTimestamp") is not None,
            weight=_weight((meta.get("annotations") or {}).get(WEIGHT)),
        )

    @property
    def candidate(self) -> bool:
        """Running, Ready, addressable and not being deleted: worth probing and dispatching to."""
        return self.phase == "Running" and self.ready and bool(self.ip) and not self.terminating


def _weight(raw: str | None) -> int | None:
    """A pod's weight annotation, if it is a whole number from 0 to 1000 (else ignored)."""
    if raw is None or not raw.strip().isdigit():
        return None
    value = int(raw.strip())
    return value if value <= 1000 else None

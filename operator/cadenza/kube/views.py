"""Compact, immutable views of the watched objects, as kept in the replicas' indexes.

A view holds what the operator needs and nothing else, so memory stays flat however large the
objects' status grows. ``spec_hash`` covers the spec and the annotations that change behaviour,
never the status, so a status-only change of a Task is not a change of its view's hash.

Invariant: building a view never raises for anything a user can write into an object (an odd
annotation, label or spec value): a view that raised would drop the object from kopf's index and
keep a new replica from ever becoming ready. Values the operator cannot use are kept out of the
view (a bad weight annotation reads as none, with ``weight_error`` saying why) or reported by the
spec's reader (``TaskView.task_spec``).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from cadenza.core import fields, taskspec

ORIGINAL_NAME = "cadenza.dev/original-name"
TRIGGER = "cadenza.dev/trigger"
ROTATE_TOKEN = "cadenza.dev/rotate-token"
"""Executor annotation: each new value rotates the Executor's dispatch token once."""
WEIGHT = "cadenza.dev/weight"
"""Pod annotation: this pod's weight for the Weighted strategy, instead of its Executor entry's."""


def spec_hash(spec: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> str:
    canonical = json.dumps([spec, extra or {}], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class StatusSeed:
    """What a new leader's status book takes over from a Task's stored status: each
    condition's status and ``lastTransitionTime`` (so a condition that did not change keeps its
    time across leaders), and the counts Events were already posted for. Read from the watched
    object, so the book needs no GET per Task; values of the wrong shape (the status subresource
    is writable by anyone RBAC allows) are left out."""

    transitions: tuple[tuple[str, str, str], ...] = ()
    """(type, status, lastTransitionTime) of each condition."""
    failures: int = 0
    skipped: int = 0
    observed_generation: int = 0
    """The generation the stored status answers (0: none)."""

    @classmethod
    def of(cls, status: Any) -> StatusSeed:
        if not isinstance(status, Mapping):
            return cls()
        conditions = status.get("conditions")
        transitions = tuple(
            (c["type"], c["status"], c["lastTransitionTime"])
            for c in (conditions if isinstance(conditions, list) else [])
            if isinstance(c, Mapping)
            and all(isinstance(c.get(k), str) for k in ("type", "status", "lastTransitionTime"))
        )
        counters = status.get("counters")
        skipped = counters.get("skipped") if isinstance(counters, Mapping) else 0
        return cls(
            transitions,
            _count(status.get("consecutiveFailures")),
            _count(skipped),
            _count(status.get("observedGeneration")),
        )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


@dataclass(frozen=True)
class TaskView:
    uid: str
    namespace: str
    name: str
    generation: int
    spec_json: str
    """The spec as compact JSON text: a few hundred bytes, where the decoded dicts and strings
    of a defaulted spec are a few KiB, for each of thousands of Tasks. :attr:`spec` decodes it;
    :attr:`task_spec` is the parsed spec every part reads."""
    original_name: str | None
    trigger: str | None
    spec_hash: str
    status_seed: StatusSeed = StatusSeed()

    @classmethod
    def from_body(cls, body: Mapping[str, Any], previous: TaskView | None = None) -> TaskView:
        """The view of ``body``; ``previous`` (the view of the same name so far) is reused when
        only the status changed: every status write comes back as an event, and encoding and
        hashing the spec again was most of what such an event cost."""
        meta = body["metadata"]
        annotations = meta.get("annotations") or {}
        uid, generation = meta["uid"], int(meta.get("generation") or 0)
        original_name, trigger = annotations.get(ORIGINAL_NAME), annotations.get(TRIGGER)
        seed = StatusSeed.of(body.get("status"))
        if (
            previous is not None
            and (previous.uid, previous.generation) == (uid, generation)
            and (previous.original_name, previous.trigger) == (original_name, trigger)
        ):
            # The spec is the same: a Task's generation moves with every change of its spec.
            return previous if previous.status_seed == seed else previous.with_seed(seed)
        return cls.of(
            uid,
            meta["namespace"],
            meta["name"],
            generation,
            _spec(body),
            original_name=original_name,
            trigger=trigger,
            status_seed=seed,
        )

    def with_seed(self, seed: StatusSeed) -> TaskView:
        """This view with another stored status, keeping the spec already read."""
        fresh = replace(self, status_seed=seed)
        if "task_spec" in self.__dict__:  # what `functools.cached_property` keeps
            fresh.__dict__["task_spec"] = self.__dict__["task_spec"]
        return fresh

    @classmethod
    def of(
        cls,
        uid: str,
        namespace: str,
        name: str,
        generation: int,
        spec: Mapping[str, Any],
        *,
        original_name: str | None = None,
        trigger: str | None = None,
        status_seed: StatusSeed = StatusSeed(),
    ) -> TaskView:
        """The view of a Task with this spec (JSON values) and these annotations."""
        return cls(
            uid=uid,
            namespace=namespace,
            name=name,
            generation=generation,
            spec_json=json.dumps(spec, separators=(",", ":")),
            original_name=original_name,
            trigger=trigger,
            spec_hash=spec_hash(spec, {ORIGINAL_NAME: original_name}),
            status_seed=status_seed,
        )

    @property
    def spec(self) -> dict[str, Any]:
        """The spec, decoded anew on each call (the caller may keep or change it)."""
        decoded = json.loads(self.spec_json)
        return decoded if isinstance(decoded, dict) else {}

    @functools.cached_property
    def task_spec(self) -> tuple[taskspec.TaskSpec, tuple[fields.FieldError, ...]]:
        """The spec as read by the one reader every part shares, with its problems; read once
        per view (a changed object gets a new view), by whichever part asks first."""
        return taskspec.read_task_spec(self.spec)

    @property
    def executor_names(self) -> list[str]:
        return [e.name for e in self.task_spec[0].executors]


@dataclass(frozen=True)
class ExecutorView:
    uid: str
    namespace: str
    name: str
    generation: int
    spec: Mapping[str, Any]
    spec_hash: str
    rotate_token: str | None = None
    """The ``cadenza.dev/rotate-token`` annotation: a value not seen before rotates the token."""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ExecutorView:
        meta = body["metadata"]
        spec = _spec(body)
        rotate = (meta.get("annotations") or {}).get(ROTATE_TOKEN)
        return cls(
            uid=meta["uid"],
            namespace=meta["namespace"],
            name=meta["name"],
            generation=int(meta.get("generation") or 0),
            spec=spec,
            spec_hash=spec_hash(spec),
            rotate_token=rotate if isinstance(rotate, str) else None,
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
    weight_error: str | None = None
    """Why the weight annotation was ignored, if it was."""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PodView:
        meta = body["metadata"]
        status = body.get("status") or {}
        conditions = status.get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        weight, weight_error = _weight((meta.get("annotations") or {}).get(WEIGHT))
        return cls(
            uid=meta["uid"],
            namespace=meta["namespace"],
            name=meta["name"],
            labels=dict(meta.get("labels") or {}),
            ip=status.get("podIP") or None,
            phase=status.get("phase") or "Pending",
            ready=ready,
            terminating=meta.get("deletionTimestamp") is not None,
            weight=weight,
            weight_error=weight_error,
        )

    @property
    def candidate(self) -> bool:
        """Running, Ready, addressable and not being deleted: worth probing and dispatching to."""
        return self.phase == "Running" and self.ready and bool(self.ip) and not self.terminating


def _spec(body: Mapping[str, Any]) -> dict[str, Any]:
    # The schemas make `spec` an object; anything else reads as empty, and the spec's reader
    # names what is then missing.
    spec = body.get("spec")
    return dict(spec) if isinstance(spec, Mapping) else {}


WEIGHT_MAX = taskspec.WEIGHT.high


def _weight(raw: str | None) -> tuple[int | None, str | None]:
    """A pod's weight annotation if it is a whole number from 0 to WEIGHT_MAX, else None and why.
    ASCII digits only: ``str.isdigit`` also takes "²", which ``int`` refuses, and a string of
    thousands of digits, which ``int`` refuses too."""
    if raw is None:
        return None, None
    text = raw.strip(" \t")
    if text.isascii() and text.isdigit() and len(text) <= len(str(WEIGHT_MAX)):
        value = int(text)
        if value <= WEIGHT_MAX:
            return value, None
    return None, (
        f"metadata.annotations[{WEIGHT}]: must be a whole number from 0 to {WEIGHT_MAX},"
        f" got {fields.show(raw)}; the pod takes its Executor entry's weight"
    )

"""``Executor.status``: what the leader's pool sees, written through the status subresource.

Invariants:
- Written only while ``lease_valid()`` holds (a deposed leader's view is stale).
- Written only when something a person reads changed: the pods and their phase, readiness,
  health, runs in flight and errors, the counts, ``observedGeneration``, the conditions. A newer
  ``lastProbeTime`` alone is written once the stored one is ``probe_time_refresh`` seconds old,
  so the status shows the pool is alive without a PATCH per probe.
- At most one PATCH per Executor per ``min_interval``; a change inside the interval is written
  when it ends. So API server load grows with neither probe frequency nor pod churn.
- Nothing is written for an Executor whose pods have not all been probed once yet: a new
  leader starts knowing no pod healthy and must not flap ``Available`` to False on takeover.
- ``Available`` (True while at least one pod can take runs) keeps its ``lastTransitionTime``
  while its status holds; conditions of other writers are kept as they are. The first write for
  an Executor reads the object once for both; later writes start from what was written.

WARNING: the Kubernetes client blocks; reads and patches run in threads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from cadenza.dispatch.client import rfc3339
from cadenza.executors.members import ExecutorSnapshot
from cadenza.executors.pool import ExecutorPool
from cadenza.kube import objects
from cadenza.waiting import at_most

log = logging.getLogger(__name__)

PLURAL = "executors"
AVAILABLE = "Available"
_DEBOUNCE_SECONDS = 0.5


def build_status(
    snapshot: ExecutorSnapshot, previous_conditions: Sequence[Mapping[str, Any]], now: datetime
) -> dict[str, Any]:
    """The status to write for ``snapshot``; ``previous_conditions`` as currently stored."""
    pods: list[dict[str, Any]] = []
    for pod in snapshot.pods:
        entry: dict[str, Any] = {
            "name": pod.name,
            "phase": pod.phase,
            "ready": pod.ready,
            "healthy": bool(pod.healthy),
            "inFlight": pod.in_flight,
        }
        if pod.ip:
            entry["ip"] = pod.ip
        if pod.last_probe_time is not None:
            entry["lastProbeTime"] = rfc3339(pod.last_probe_time)
        if pod.last_error:
            entry["lastError"] = pod.last_error
        pods.append(entry)
    total = len(snapshot.pods)
    ready = sum(p.ready and p.phase == "Running" for p in snapshot.pods)
    healthy = snapshot.healthy_pods
    available = _available(snapshot, total, ready, healthy)
    conditions = []
    for old in previous_conditions:
        if old.get("type") == AVAILABLE:
            if old.get("status") == available["status"] and old.get("lastTransitionTime"):
                available["lastTransitionTime"] = old["lastTransitionTime"]
        else:
            conditions.append(dict(old))  # another writer's condition, kept as it is
    available.setdefault("lastTransitionTime", now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return {
        "observedGeneration": snapshot.generation,
        "pods": pods,
        "totalPods": total,
        "readyPods": ready,
        "healthyPods": healthy,
        "conditions": [available, *conditions],
    }


def _available(snapshot: ExecutorSnapshot, total: int, ready: int, healthy: int) -> dict[str, Any]:
    if healthy:
        status, reason = "True", "HealthyPods"
        message = f"{healthy} of {total} pods can take runs"
    elif snapshot.spec_error:
        status, reason = "False", "InvalidSpec"
        message = f"no pod can take runs: {snapshot.spec_error}"
    else:
        status, reason = "False", "NoHealthyPods"
        if snapshot.token_error:
            message = f"no pod can take runs: {snapshot.token_error}"
        elif not total:
            message = "no pod matches spec.selector in this namespace"
        elif not ready:
            message = f"none of the {total} pods is Running and Ready"
        else:
            message = f"{ready} of {total} pods are Ready but none passes the health check"
    return {
        "type": AVAILABLE,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": snapshot.generation,
    }


def needs_write(stored: Mapping[str, Any], wanted: Mapping[str, Any], refresh: float) -> bool:
    """Whether ``wanted`` differs from the ``stored`` status in a way worth a PATCH."""
    if _without_probe_times(stored, wanted) != _without_probe_times(wanted, wanted):
        return True
    before = {p["name"]: p.get("lastProbeTime") for p in stored.get("pods") or []}
    for pod in wanted.get("pods") or []:
        new, old = pod.get("lastProbeTime"), before.get(pod["name"])
        if new and (not old or _seconds_between(old, new) >= refresh):
            return True
    return False


def _without_probe_times(status: Mapping[str, Any], keys: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``status`` we write (those of ``keys``), pods without ``lastProbeTime``."""
    kept = {key: status.get(key) for key in keys}
    kept["pods"] = [
        {k: v for k, v in pod.items() if k != "lastProbeTime"} for pod in kept.get("pods") or []
    ]
    return kept


def _seconds_between(old: str, new: str) -> float:
    try:
        return (datetime.fromisoformat(new) - datetime.fromisoformat(old)).total_seconds()
    except ValueError:
        return math.inf


@dataclasses.dataclass(frozen=True)
class _Written:
    status: Mapping[str, Any]
    at: float


class ExecutorStatusWriter:
    def __init__(
        self,
        client: objects.ApiClient,
        lease_valid: Callable[[], bool],
        *,
        min_interval: float = 2.0,
        probe_time_refresh: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._objects = objects.Objects(client)
        self._lease_valid = lease_valid
        self._min_interval = min_interval
        self._refresh = probe_time_refresh
        self._clock = clock
        self._wall_clock = wall_clock
        self._written: dict[str, _Written] = {}
        self._failure: str | None = None
        self.patches = 0
        """Status PATCHes sent (for tests and metrics)."""

    async def run(self, pool: ExecutorPool) -> None:
        """Keep every Executor's status in step with ``pool`` until cancelled."""
        seen = -1
        while True:
            delay = await self.write(pool.snapshot())
            updated = await at_most(delay, pool.wait_updated(seen))
            seen = seen if updated is None else updated
            # Probes land one by one; look at a burst of them once, not once each.
            await asyncio.sleep(_DEBOUNCE_SECONDS)

    async def write(self, snapshots: Sequence[ExecutorSnapshot]) -> float:
        """Write the statuses that need it now; seconds until a deferred one is due (at most
        ``probe_time_refresh``)."""
        live = {s.uid for s in snapshots}
        self._written = {uid: w for uid, w in self._written.items() if uid in live}
        delay = self._refresh
        for snapshot in snapshots:
            if not snapshot.settled:
                continue  # its first probes finish within a probe timeout and wake us
            try:
                wait = await self._write_one(snapshot)
            except objects.ApiError as exc:
                if exc.status == 404:  # deleted meanwhile; the pool forgets it soon
                    self._written.pop(snapshot.uid, None)
                    continue
                self._failed(snapshot, f"HTTP {exc.status} {exc.reason}")
                wait = self._min_interval
            except Exception as exc:  # the API server is unreachable: try again later
                self._failed(snapshot, str(exc))
                wait = self._min_interval
            if wait is not None:
                delay = min(delay, wait)
        return max(delay, 0.0)

    async def _write_one(self, snapshot: ExecutorSnapshot) -> float | None:
        written = self._written.get(snapshot.uid)
        if written is None:
            stored = await asyncio.to_thread(self._read_status, snapshot)
            written = self._written[snapshot.uid] = _Written(stored, -math.inf)
        wanted = build_status(snapshot, written.status.get("conditions") or [], self._wall_clock())
        if not needs_write(written.status, wanted, self._refresh):
            return None
        wait = written.at + self._min_interval - self._clock()
        if wait > 0:
            return wait
        if not self._lease_valid():
            return self._min_interval
        await asyncio.to_thread(
            self._objects.patch_status, PLURAL, snapshot.namespace, snapshot.name, wanted
        )
        self.patches += 1
        self._written[snapshot.uid] = _Written(wanted, self._clock())
        self._failure = None
        return None

    def _read_status(self, snapshot: ExecutorSnapshot) -> Mapping[str, Any]:
        return self._objects.status_of(PLURAL, snapshot.namespace, snapshot.name)

    def _failed(self, snapshot: ExecutorSnapshot, cause: str) -> None:
        if cause != self._failure:
            log.warning(
                "writing the status of executor %s/%s failed (will retry): %s",
                snapshot.namespace, snapshot.name, cause,
            )  # fmt: skip
        self._failure = cause

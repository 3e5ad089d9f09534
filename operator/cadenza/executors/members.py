"""What the pool knows about each Executor and each of its pods, and the frozen views it hands out.

A *member* is one pod selected by one Executor (a pod selected by two Executors is two members:
each Executor probes it with its own health check). An Executor's static endpoints (executors
outside the cluster) are members too, presented as pods by :mod:`cadenza.executors.endpoints`:
they are reached at their own URLs and, when the Executor asks for heartbeats, are healthy only
while those arrive. The mutable records here belong to
:class:`cadenza.executors.pool.ExecutorPool` and never leave it; readers get the frozen
:class:`PodCandidate`, :class:`PodSnapshot` and :class:`ExecutorSnapshot`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from datetime import datetime

from cadenza.core import health as pod_health
from cadenza.core import selectors
from cadenza.dispatch.credentials import DispatchToken
from cadenza.executors import endpoints
from cadenza.executors.endpoints import Endpoint
from cadenza.executors.persistence import HealthRow
from cadenza.executors.spec import ExecutorSpec
from cadenza.kube.views import ExecutorView, PodView

log = logging.getLogger(__name__)

Key = tuple[str, str]
"""(executor uid, pod uid)."""


@dataclasses.dataclass(frozen=True)
class PodCandidate:
    """A pod that may take a run now, with what the dispatcher needs to send it."""

    executor: str
    executor_uid: str
    pod: str
    pod_uid: str
    ip: str
    base_url: str
    healthy: bool
    in_flight: int
    capacity: int
    """The Executor's ``maxConcurrencyPerPod``."""
    token: DispatchToken | None
    weight: int | None = None
    """The pod's ``cadenza.dev/weight`` annotation, which overrides its Executor entry's."""
    holds_runs: bool = False
    """Its sidecar starts a run at the run's ``startAt`` (its last health answer said protocol
    version 3 or later), so a run may be sent to it ahead of its tick."""

    @property
    def full(self) -> bool:
        """The pod runs as many runs as it may; the dispatcher passes it over."""
        return self.in_flight >= self.capacity


@dataclasses.dataclass(frozen=True)
class PodSnapshot:
    name: str
    uid: str
    ip: str | None
    phase: str
    ready: bool
    healthy: bool | None
    """None until the first probe answered or failed."""
    candidate: bool
    in_flight: int
    last_probe_time: datetime | None
    last_error: str | None
    probes: int
    failed_probes: int
    consecutive_failures: int
    consecutive_successes: int


@dataclasses.dataclass(frozen=True)
class ExecutorSnapshot:
    uid: str
    namespace: str
    name: str
    generation: int
    pods: tuple[PodSnapshot, ...]
    """By pod name."""
    token_error: str | None
    """Why the dispatch token cannot be read; its pods are no candidates meanwhile."""
    settled: bool = True
    """Every addressable pod has been probed and the token read at least once. Until then the
    pool knows too little to report (a new leader would otherwise flap Available to False)."""
    spec_error: str | None = None
    """What is wrong with the Executor's spec; its pods are no candidates until it is fixed."""

    @property
    def healthy_pods(self) -> int:
        """Pods (or outside endpoints) that can take runs now."""
        return sum(p.candidate for p in self.pods)


@dataclasses.dataclass
class Member:
    pod: PodView
    next_probe: float
    """Clock time the next probe is due."""
    health: pod_health.PodHealth = pod_health.INITIAL
    probing: asyncio.Task[None] | None = None
    probes: int = 0
    failed_probes: int = 0
    dispatch_error: str | None = None
    endpoint: Endpoint | None = None
    """Set for an executor outside the cluster: reached at its URLs, not the pod IP."""
    beat_error: str | None = None
    """Why the endpoint's heartbeats say it is unhealthy (None: fresh, or not required)."""
    holds_runs: bool = False
    """Its last good health answer said the sidecar honours ``startAt``."""

    @property
    def healthy(self) -> bool:
        """The probes call it healthy and its heartbeats (if required) are fresh."""
        return self.health.healthy and self.beat_error is None

    def listed(self, pod: PodView, endpoint: Endpoint | None) -> None:
        """The pod as the source lists it now. One that is not probed any more (not Running: an
        Offline endpoint, a pod not started or done) drops its last verdict, which no longer
        holds: it is not reported healthy, nor sent runs on its return before a probe."""
        self.pod, self.endpoint = pod, endpoint
        if not self.probeable:
            self.health = pod_health.INITIAL

    def base_url(self, spec: ExecutorSpec) -> str:
        return self.endpoint.base_url if self.endpoint else spec.base_url(self.pod.ip or "")

    def probe_url(self, spec: ExecutorSpec) -> str:
        path = spec.health_check.path
        return self.endpoint.probe_url(path) if self.endpoint else self.base_url(spec) + path

    @property
    def probed(self) -> bool:
        return self.health.last_probe_at is not None

    @property
    def probeable(self) -> bool:
        # Not-Ready and terminating pods are still probed: status shows what their sidecar says.
        return self.pod.phase == "Running" and bool(self.pod.ip)

    @property
    def last_error(self) -> str | None:
        return self.dispatch_error or self.beat_error or self.health.last_error

    def health_row(self, in_flight: int) -> HealthRow:
        healthy = self.healthy if self.probed else None
        return HealthRow(healthy, in_flight, self.health.last_probe_at, self.last_error)


@dataclasses.dataclass
class ExecutorEntry:
    view: ExecutorView
    spec: ExecutorSpec
    spec_error: str | None = None
    token: DispatchToken | None = None
    token_error: str | None = None
    token_due: float = 0.0
    loading: asyncio.Task[None] | None = None
    members: list[Key] = dataclasses.field(default_factory=list)

    def settled(self, members: Sequence[Member], tokens_in_use: bool) -> bool:
        token_tried = self.token is not None or self.token_error is not None
        if tokens_in_use and not token_tried:
            return False
        return all(member.probed or not member.probeable for member in members)

    def admits(self, member: Member, tokens_in_use: bool) -> bool:
        """Whether the member is a candidate: Kubernetes, our probes and the token agree."""
        token_known = self.token is not None or not tokens_in_use
        valid = self.spec_error is None
        return valid and member.pod.candidate and member.healthy and token_known

    def candidate(self, member: Member, in_flight: int) -> PodCandidate:
        pod = member.pod
        return PodCandidate(
            executor=self.view.name,
            executor_uid=self.view.uid,
            pod=pod.name,
            pod_uid=pod.uid,
            ip=pod.ip or "",
            base_url=member.base_url(self.spec),
            healthy=member.healthy,
            in_flight=in_flight,
            capacity=self.spec.max_concurrency_per_pod,
            token=self.token,
            weight=pod.weight,
            holds_runs=member.holds_runs,
        )

    def pod_snapshot(self, member: Member, in_flight: int, candidate: bool) -> PodSnapshot:
        pod, health = member.pod, member.health
        return PodSnapshot(
            name=pod.name,
            uid=pod.uid,
            ip=pod.ip,
            phase=pod.phase,
            ready=pod.ready,
            healthy=member.healthy if member.probed else None,
            candidate=candidate,
            in_flight=in_flight,
            last_probe_time=health.last_probe_at,
            last_error=member.last_error,
            probes=member.probes,
            failed_probes=member.failed_probes,
            consecutive_failures=health.consecutive_failures,
            consecutive_successes=health.consecutive_successes,
        )


def selected(executor: ExecutorView, pods: Sequence[PodView]) -> list[PodView]:
    """The pods (of the Executor's namespace) its selector matches, then its endpoints."""
    static = endpoints.as_pods(executor.namespace, executor.uid, executor.spec)
    if not executor.selector:  # no selector: only endpoints (the spec's reader checks why)
        return static
    try:
        chosen = [pod for pod in pods if selectors.matches(executor.selector, pod.labels)]
    except ValueError as exc:  # the CRD's enum refuses such selectors; an old object may not
        log.warning("executor %s/%s: %s", executor.namespace, executor.name, exc)
        chosen = []
    return chosen + static

"""Pod health: the leader's probe results folded into a healthy/unhealthy verdict per pod.

- A pod starts ``INITIAL``: not healthy, never probed. It is already Running and Ready by the
  kubelet's account, so the FIRST successful probe makes it healthy; waiting for
  ``success_threshold`` would only delay work after every failover. The leader should therefore
  probe a pod as soon as it appears rather than after a full period.
- A healthy pod becomes unhealthy after ``failure_threshold`` consecutive failures.
- A pod that has been healthy and was then marked unhealthy needs ``success_threshold``
  consecutive successes to recover (the guard against a flapping pod). A pod that has never been
  healthy still needs only one.
- Any failure resets the success count and any success resets the failure count.

Invariants: pure; an observation older than the last one recorded is ignored (probes run
concurrently and may finish out of order), so the state never moves backwards in time.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime


@dataclasses.dataclass(frozen=True)
class HealthThresholds:
    failure_threshold: int
    """Consecutive failures that mark a healthy pod unhealthy."""
    success_threshold: int
    """Consecutive successes that bring an unhealthy pod back."""

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.success_threshold < 1:
            raise ValueError(
                "thresholds must be at least 1, got"
                f" failure={self.failure_threshold} success={self.success_threshold}"
            )


@dataclasses.dataclass(frozen=True)
class PodHealth:
    healthy: bool
    consecutive_failures: int
    consecutive_successes: int
    last_probe_at: datetime | None
    last_error: str | None
    ever_healthy: bool = False
    """Whether the pod has been healthy before; decides how many successes a recovery needs."""


INITIAL = PodHealth(
    healthy=False,
    consecutive_failures=0,
    consecutive_successes=0,
    last_probe_at=None,
    last_error=None,
)
"""A pod not probed yet."""


def observe(
    health: PodHealth,
    ok: bool,
    at: datetime,
    thresholds: HealthThresholds,
    error: str | None = None,
) -> PodHealth:
    """The pod's health after one probe result taken at ``at``."""
    if health.last_probe_at is not None and at < health.last_probe_at:
        return health
    if ok:
        successes = health.consecutive_successes + 1
        needed = thresholds.success_threshold if health.ever_healthy else 1
        healthy = health.healthy or successes >= needed
        return PodHealth(
            healthy=healthy,
            consecutive_failures=0,
            consecutive_successes=successes,
            last_probe_at=at,
            last_error=None,
            ever_healthy=health.ever_healthy or healthy,
        )
    failures = health.consecutive_failures + 1
    return PodHealth(
        healthy=health.healthy and failures < thresholds.failure_threshold,
        consecutive_failures=failures,
        consecutive_successes=0,
        last_probe_at=at,
        last_error=error if error is not None else "probe failed",
        ever_healthy=health.ever_healthy,
    )

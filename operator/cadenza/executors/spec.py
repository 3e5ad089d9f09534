"""An Executor's spec as the leader uses it, with the CRD's defaults filled in.

The API server applies the CRD defaults to stored objects, but views built in tests (and objects
stored before a default was added) may lack fields; reading them here, once, keeps every default
in one place. Pure: no I/O.

Invariant: the probe timeout never exceeds the period (the CRD refuses it; clamped here all the
same), so a pod has at most one probe in flight.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from cadenza.core.health import HealthThresholds


@dataclasses.dataclass(frozen=True)
class HealthCheck:
    path: str = "/healthz"
    period_seconds: float = 10.0
    timeout_seconds: float = 2.0
    failure_threshold: int = 3
    success_threshold: int = 1

    @property
    def thresholds(self) -> HealthThresholds:
        return HealthThresholds(self.failure_threshold, self.success_threshold)


@dataclasses.dataclass(frozen=True)
class TokenRef:
    """``spec.tokenSecretRef``: the Secret (in the Executor's namespace) and its data key."""

    name: str
    key: str = "token"


@dataclasses.dataclass(frozen=True)
class ExecutorSpec:
    port: int = 9090
    scheme: str = "http"
    health_check: HealthCheck = dataclasses.field(default_factory=HealthCheck)
    max_concurrency_per_pod: int = 4
    token_ref: TokenRef | None = None

    def base_url(self, ip: str) -> str:
        """``http://10.0.0.7:9090``; IPv6 addresses get their brackets."""
        host = f"[{ip}]" if ":" in ip else ip
        return f"{self.scheme}://{host}:{self.port}"


def parse_spec(spec: Mapping[str, Any]) -> ExecutorSpec:
    """The spec with every missing field at its CRD default."""
    check: Mapping[str, Any] = spec.get("healthCheck") or {}
    period = max(1.0, float(check.get("periodSeconds", 10)))
    ref: Mapping[str, Any] | None = spec.get("tokenSecretRef")
    return ExecutorSpec(
        port=int(spec.get("port", 9090)),
        scheme=str(spec.get("scheme", "http")),
        health_check=HealthCheck(
            path=str(check.get("path", "/healthz")),
            period_seconds=period,
            timeout_seconds=min(period, max(0.1, float(check.get("timeoutSeconds", 2)))),
            failure_threshold=max(1, int(check.get("failureThreshold", 3))),
            success_threshold=max(1, int(check.get("successThreshold", 1))),
        ),
        max_concurrency_per_pod=max(1, int(spec.get("maxConcurrencyPerPod", 4))),
        token_ref=TokenRef(str(ref["name"]), str(ref.get("key") or "token"))
        if ref and ref.get("name")
        else None,
    )

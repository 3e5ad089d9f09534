"""An Executor's spec as the leader uses it, with the CRD's defaults filled in.

The API server applies the CRD defaults to stored objects, but views built in tests (and objects
stored before a default or a bound was added) may lack fields or hold values out of bounds;
reading them here, once, keeps every default and bound in one place. Pure: no I/O.

Invariants:
- :func:`read_spec` never raises: each bad field takes its default and is reported, so the pool
  can keep such an Executor out of rotation (``Available=False``) while the others run on.
- The probe timeout never exceeds the period (the CRD refuses it; clamped here all the same), so
  a pod has at most one probe in flight.
- ``selector`` may be absent only when ``endpoints`` lists members (executors outside the
  cluster, :mod:`cadenza.executors.endpoints`); an absent selector selects no pod.
- ``tokenSecretRef`` is deprecated: the operator makes and owns every Executor's token Secret
  (:mod:`cadenza.kube.token_secrets`). Given the Executor's name, a ref naming any other Secret
  or key is a problem (so the Executor takes no runs, ``Available=False`` says why); it never
  makes the operator read another Secret.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping
from typing import Any

from cadenza.core import fields, selectors
from cadenza.core.fields import FieldError, Integer
from cadenza.core.health import HealthThresholds
from cadenza.executors import endpoints
from cadenza.executors.endpoints import Endpoint
from cadenza.kube import token_secrets

PORT = Integer("port", 1, 65_535, 9090)
PERIOD_SECONDS = Integer("periodSeconds", 1, 3600, 10)
TIMEOUT_SECONDS = Integer("timeoutSeconds", 1, 60, 2)
FAILURE_THRESHOLD = Integer("failureThreshold", 1, 100, 3)
SUCCESS_THRESHOLD = Integer("successThreshold", 1, 100, 1)
MAX_CONCURRENCY_PER_POD = Integer("maxConcurrencyPerPod", 1, 10_000, 4)
HEARTBEAT_SECONDS = Integer("heartbeatSeconds", 1, 3600)
INTEGERS: dict[str, Integer] = {
    "spec.port": PORT,
    "spec.healthCheck.periodSeconds": PERIOD_SECONDS,
    "spec.healthCheck.timeoutSeconds": TIMEOUT_SECONDS,
    "spec.healthCheck.failureThreshold": FAILURE_THRESHOLD,
    "spec.healthCheck.successThreshold": SUCCESS_THRESHOLD,
    "spec.maxConcurrencyPerPod": MAX_CONCURRENCY_PER_POD,
    "spec.heartbeatSeconds": HEARTBEAT_SECONDS,
}
"""Every integer field by its path in the CRD schema."""
SCHEMES = ("http", "https")
PATH_MAX_LENGTH = 1024
HEALTH_PATH = re.compile(r"/[-A-Za-z0-9._~!$&'()*+,;=:@%/?]*")
"""An absolute URL path (RFC 3986 path and query characters): nothing a URL cannot carry."""
SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
SECRET_MAX_LENGTH = 253

_EMPTY: Mapping[str, Any] = {}


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
    endpoints: tuple[Endpoint, ...] = ()
    heartbeat_seconds: int | None = None
    """Endpoints must heartbeat this often (None: heartbeats are not required)."""

    def base_url(self, ip: str) -> str:
        """``http://10.0.0.7:9090``; IPv6 addresses get their brackets."""
        host = f"[{ip}]" if ":" in ip else ip
        return f"{self.scheme}://{host}:{self.port}"


def parse_spec(spec: Mapping[str, Any]) -> ExecutorSpec:
    """The spec with every missing (or bad) field at its CRD default."""
    return read_spec(spec)[0]


def read_spec(
    spec: Any, executor: str | None = None
) -> tuple[ExecutorSpec, tuple[FieldError, ...]]:
    """The spec with each bad field at its default, and every problem found; never raises.

    With the Executor's name, a ``tokenSecretRef`` naming another Secret than the one the
    operator makes for it is a problem too."""
    problems = fields.Problems()
    raw = problems.read(functools.partial(fields.mapping, spec, "spec"), _EMPTY)
    check = problems.read(
        functools.partial(fields.mapping, raw.get("healthCheck"), "spec.healthCheck"), _EMPTY
    )
    period = float(_integer(problems, PERIOD_SECONDS, check, "spec.healthCheck"))
    timeout = float(_integer(problems, TIMEOUT_SECONDS, check, "spec.healthCheck"))
    parsed = ExecutorSpec(
        port=_integer(problems, PORT, raw, "spec"),
        scheme=problems.read(functools.partial(_scheme, raw), "http"),
        health_check=HealthCheck(
            path=problems.read(functools.partial(_path, check), "/healthz"),
            period_seconds=period,
            timeout_seconds=min(period, timeout),
            failure_threshold=_integer(problems, FAILURE_THRESHOLD, check, "spec.healthCheck"),
            success_threshold=_integer(problems, SUCCESS_THRESHOLD, check, "spec.healthCheck"),
        ),
        max_concurrency_per_pod=_integer(problems, MAX_CONCURRENCY_PER_POD, raw, "spec"),
        token_ref=problems.read(functools.partial(_token_ref, raw.get("tokenSecretRef")), None),
        endpoints=problems.read(functools.partial(endpoints.read_all, raw.get("endpoints")), ()),
        heartbeat_seconds=problems.read(
            functools.partial(HEARTBEAT_SECONDS.read, raw, "spec"), None
        ),
    )
    if raw.get("selector") is not None or not parsed.endpoints:
        problems.read(functools.partial(_check_selector, raw.get("selector")), None)
    if executor is not None and parsed.token_ref is not None:
        problems.read(functools.partial(_check_own_secret, parsed.token_ref, executor), None)
    return parsed, tuple(problems.found)


def _check_own_secret(ref: TokenRef, executor: str) -> None:
    own = TokenRef(token_secrets.secret_name(executor), token_secrets.TOKEN_KEY)
    if ref != own:
        raise FieldError(
            "spec.tokenSecretRef",
            f"names Secret {ref.name!r} key {ref.key!r}, but the operator reads the dispatch "
            f"token only from the Secret it makes and owns for this Executor ({own.name!r}, key "
            f"{own.key!r}): remove spec.tokenSecretRef (deprecated) and mount that Secret",
        )


def _integer(problems: fields.Problems, field: Integer, raw: Mapping[str, Any], path: str) -> int:
    assert field.default is not None
    return problems.read(functools.partial(field.read_required, raw, path), field.default)


def _scheme(raw: Mapping[str, Any]) -> str:
    value = raw.get("scheme")
    return "http" if value is None else fields.choice(value, "spec.scheme", SCHEMES)


def _path(check: Mapping[str, Any]) -> str:
    value = check.get("path")
    if value is None:
        return "/healthz"
    return fields.text(value, "spec.healthCheck.path", 1, PATH_MAX_LENGTH, HEALTH_PATH)


def _check_selector(raw: Any) -> None:
    # The view keeps the selector itself; here it is only checked, with the matcher's own rules.
    selector = fields.mapping(raw, "spec.selector")
    try:
        selectors.matches(selector, {})
    except ValueError as error:
        raise FieldError("spec.selector", str(error).removeprefix("selector")) from None
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        raise FieldError(
            "spec.selector", "must not be empty: it would match every pod in the namespace"
        )


def _token_ref(raw: Any) -> TokenRef | None:
    if raw is None:
        return None
    path = "spec.tokenSecretRef"
    ref = fields.mapping(raw, path)
    name = fields.text(ref.get("name"), f"{path}.name", 1, SECRET_MAX_LENGTH, SECRET_NAME)
    key = ref.get("key")
    if key is None:
        return TokenRef(name)
    return TokenRef(name, fields.text(key, f"{path}.key", 1, SECRET_MAX_LENGTH, SECRET_KEY))

"""``CADENZA_API_*`` and ``CADENZA_CALLBACK_GRACE_SECONDS``: the REST API's defaults for bodies
that name no namespace or Executor, its auth cache, its limits, and how long callbacks stay
answerable."""

from __future__ import annotations

from dataclasses import dataclass

from cadenza.settings.reading import Reader, boolean


@dataclass(frozen=True)
class ApiSettings:
    default_namespace: str = "default"
    """Namespace of the REST API's namespace-less routes (``/api/v1/tasks/...``) and of a
    created Task whose body names none (``CADENZA_API_DEFAULT_NAMESPACE``); default: the first
    watched namespace, or ``default`` when the operator watches the whole cluster."""

    default_executor: str = "default"
    """Executor a Task created through the API serves from when its body lists none, as the
    original system's bodies never do (``CADENZA_API_DEFAULT_EXECUTOR``). Until an Executor of
    that name exists, the Task waits with ``ExecutorAvailable=False``."""

    auth_cache_seconds: float = 5.0
    """How long a TokenReview or SubjectAccessReview answer is reused
    (``CADENZA_API_AUTH_CACHE_SECONDS``; 0 disables the cache). A revoked token or RoleBinding
    takes effect at most this much later."""

    auth_cache_size: int = 4096
    """Most answers of each review kept (``CADENZA_API_AUTH_CACHE_SIZE``); the oldest go first."""

    trigger_wait_seconds: float = 10.0
    """How long ``POST .../trigger`` waits for the leader to record the run before it answers
    202 without an id (``CADENZA_API_TRIGGER_WAIT_SECONDS``)."""

    max_body_bytes: int = 1_048_576
    """Largest request body the API reads; a bigger one answers 413
    (``CADENZA_API_MAX_BODY_BYTES``). The API server's own object limit is about 1.5 MiB."""

    callback_grace_seconds: float = 300.0
    """How long a run's callback tokens keep working once the run is over
    (``CADENZA_CALLBACK_GRACE_SECONDS``): within it a repeated report is acknowledged, after it
    every callback with such a token is refused 410 Gone and changes nothing."""

    open_metrics: bool = False
    """Serve ``/metrics`` and ``/api/v1/replicas`` without a token (``CADENZA_API_OPEN_METRICS``).
    Off by default: a caller needs ``get`` on those non-resource URLs, as RBAC grants it for
    the API server's own ``/metrics``."""


def read_api(read: Reader, namespaces: str) -> ApiSettings:
    """The section; the raw ``CADENZA_NAMESPACES`` gives the default namespace's default."""
    watched = [n.strip() for n in namespaces.split(",") if n.strip()]
    return ApiSettings(
        default_namespace=read(
            "CADENZA_API_DEFAULT_NAMESPACE", str, watched[0] if watched else "default"
        ),
        default_executor=read("CADENZA_API_DEFAULT_EXECUTOR", str, "default"),
        auth_cache_seconds=read(
            "CADENZA_API_AUTH_CACHE_SECONDS", float, 5.0, minimum=0, maximum=300
        ),
        auth_cache_size=read(
            "CADENZA_API_AUTH_CACHE_SIZE", int, 4096, minimum=1, maximum=1_000_000
        ),
        trigger_wait_seconds=read(
            "CADENZA_API_TRIGGER_WAIT_SECONDS", float, 10.0, minimum=0, maximum=300
        ),
        max_body_bytes=read(
            "CADENZA_API_MAX_BODY_BYTES", int, 1_048_576, minimum=1024, maximum=16_777_216
        ),
        callback_grace_seconds=read(
            "CADENZA_CALLBACK_GRACE_SECONDS", float, 300.0, minimum=0, maximum=604_800
        ),
        open_metrics=read("CADENZA_API_OPEN_METRICS", boolean, False),
    )

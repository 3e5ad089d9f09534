"""The operator's settings: one frozen tree, read once from ``CADENZA_*`` environment variables.

Invariant: this is the only module that reads ``os.environ``; everything else receives the
:class:`Settings` it needs as an argument. A bad value fails at start with a message naming the
variable, never later.
"""

from __future__ import annotations

import os
import socket
import ssl
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from cadenza import failpoints

T = TypeVar("T")

DEFAULT_DATABASE_URL = "mysql+pymysql://root:123456@127.0.0.1:3306/jobs"


class SettingsError(ValueError):
    """A ``CADENZA_*`` variable holds a value the operator cannot use."""


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = DEFAULT_DATABASE_URL
    """SQLAlchemy URL of the MySQL/MariaDB database (``CADENZA_DATABASE_URL``); in a cluster it
    comes from a Secret. The default is the original system's ``root:123456@127.0.0.1/jobs``."""

    pool_size: int = 8
    """Pooled connections for the mirror, claims, history and callbacks
    (``CADENZA_DATABASE_POOL_SIZE``). The leader lock uses a connection of its own on top."""

    connect_timeout: float = 5.0
    """Seconds to wait for a connection before the database counts as unreachable
    (``CADENZA_DATABASE_CONNECT_TIMEOUT``)."""

    migrations_dir: Path | None = None
    """Directory of the ordered SQL migrations (``CADENZA_MIGRATIONS_DIR``); default: the
    repository's ``sql/``, or ``/app/sql`` in the image."""


@dataclass(frozen=True)
class LeadershipSettings:
    lock_name: str = "cadenza.leader"
    """Name passed to MySQL ``GET_LOCK``; replicas sharing it elect one leader
    (``CADENZA_LOCK_NAME``). Two installations on one database need different names."""

    lease_seconds: int = 15
    """L: the lock session's ``wait_timeout``, so a frozen leader's lock frees after about L
    seconds; the heartbeat runs every L/3 and the dispatcher stops sending L - margin after the
    last good heartbeat (``CADENZA_LEASE_SECONDS``)."""

    acquire_timeout_seconds: int = 2
    """How long a follower blocks in one ``GET_LOCK`` call before looking around again
    (``CADENZA_ACQUIRE_TIMEOUT_SECONDS``)."""

    max_clock_skew_seconds: float = 2.0
    """A replica whose clock differs from the database's ``NOW()`` by more than this refuses to
    lead: fire times are compared with the local clock (``CADENZA_MAX_CLOCK_SKEW_SECONDS``)."""

    @property
    def safety_margin_seconds(self) -> float:
        """Slack between "my last heartbeat was fine" and "someone else may lead now"."""
        return max(1.0, self.lease_seconds / 5)


@dataclass(frozen=True)
class HttpSettings:
    host: str = "0.0.0.0"
    """Address the replica's HTTP server (probes, API, callbacks, metrics) binds
    (``CADENZA_HTTP_HOST``)."""

    port: int = 8080
    """Port of that server (``CADENZA_HTTP_PORT``); distinct per replica on one host."""

    advertise_url: str = ""
    """Base URL other parties use to reach this replica, e.g. in callback URLs given to sidecars
    (``CADENZA_HTTP_ADVERTISE_URL``); default ``http://<host>:<port>``, ``https://`` when the
    server has a certificate."""

    tls_cert_file: Path | None = None
    """PEM serving certificate, its chain after it (``CADENZA_HTTP_TLS_CERT_FILE``): with it the
    server speaks HTTPS only. It must be valid for the host of the advertise URL (the Service
    name, ``<service>.<namespace>.svc``), which sidecars verify. Re-read when a file changes."""

    tls_key_file: Path | None = None
    """PEM private key of that certificate (``CADENZA_HTTP_TLS_KEY_FILE``); both or neither."""


@dataclass(frozen=True)
class KubeSettings:
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch, comma-separated (``CADENZA_NAMESPACES``); empty = cluster-wide."""

    kubeconfig: str | None = None
    """Kubeconfig to log in with outside a cluster (``KUBECONFIG``); in a pod the service
    account is used."""


@dataclass(frozen=True)
class WebhookSettings:
    enabled: bool = False
    """Serve the validating admission webhook for Tasks (``CADENZA_WEBHOOK_ENABLED``); default:
    on when ``CADENZA_WEBHOOK_CERT_FILE`` is set, off otherwise. Every replica serves it; the
    ValidatingWebhookConfiguration comes from the Helm chart, never from the operator."""

    host: str = "0.0.0.0"
    """Address the webhook's HTTPS server binds (``CADENZA_WEBHOOK_HOST``)."""

    port: int = 9443
    """Port of the webhook's HTTPS server (``CADENZA_WEBHOOK_PORT``); must differ from
    ``CADENZA_HTTP_PORT``, and from every other replica's on one host."""

    cert_file: Path | None = None
    """PEM serving certificate, its chain after it (``CADENZA_WEBHOOK_CERT_FILE``); it must be
    valid for the name the API server calls, e.g. ``<service>.<namespace>.svc``. Re-read when the
    file changes, so a rotated Secret needs no restart."""

    key_file: Path | None = None
    """PEM private key of that certificate (``CADENZA_WEBHOOK_KEY_FILE``)."""


@dataclass(frozen=True)
class DispatchSettings:
    ca_file: Path | None = None
    """PEM bundle of the CAs a sidecar's certificate is verified against when its Executor says
    ``scheme: https`` (``CADENZA_DISPATCH_CA_FILE``); default: the system trust store. The
    certificate must name the address dialled: the pod IP (an IP SAN), or the host of an
    endpoint's ``baseUrl``. Read again by each new leader term."""


@dataclass(frozen=True)
class SchedulingSettings:
    deadline_grace_seconds: float = 10.0
    """How long past a run's deadline the leader waits for the pod's own timeout report before
    it cancels the run there and counts the attempt as lost (``CADENZA_DEADLINE_GRACE_SECONDS``)."""

    status_min_interval_seconds: float = 2.0
    """A Task's status is written at most once per this many seconds, however often it fires
    (``CADENZA_STATUS_MIN_INTERVAL_SECONDS``)."""

    status_max_writes_per_second: float = 20.0
    """Task status writes per second across all Tasks (``CADENZA_STATUS_MAX_WRITES_PER_SECOND``)."""

    retention_interval_seconds: float = 60.0
    """How often finished runs beyond each Task's ``spec.history`` are pruned
    (``CADENZA_RETENTION_INTERVAL_SECONDS``)."""

    dispatch_token_grace_seconds: float = 300.0
    """After an Executor's dispatch token was rotated (``cadenza.dev/rotate-token``), how long
    a sidecar that refuses the new token with 401 is sent the previous one instead, while its
    kubelet has not delivered the new one yet (``CADENZA_DISPATCH_TOKEN_GRACE_SECONDS``). Keep it
    no longer than the sidecars' ``--token-grace-seconds`` (300 by default)."""


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


@dataclass(frozen=True)
class Settings:
    instance_id: str
    """This replica's identity in ``scheduler_instances`` (``CADENZA_INSTANCE_ID``; default
    ``<hostname>-<random>``, the pod name in a cluster)."""

    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    leadership: LeadershipSettings = field(default_factory=LeadershipSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    dispatch: DispatchSettings = field(default_factory=DispatchSettings)
    kube: KubeSettings = field(default_factory=KubeSettings)
    scheduling: SchedulingSettings = field(default_factory=SchedulingSettings)
    webhook: WebhookSettings = field(default_factory=WebhookSettings)
    api: ApiSettings = field(default_factory=ApiSettings)

    thread_pool_size: int = 16
    """Threads for blocking calls (PyMySQL, the Kubernetes client); none run on the event loop
    (``CADENZA_THREAD_POOL_SIZE``)."""

    log_level: str = "INFO"
    """Python log level name (``CADENZA_LOG_LEVEL``)."""

    failpoints: Mapping[str, int] = field(default_factory=dict)
    """Where the fault suite makes this replica die (``CADENZA_FAILPOINTS``; tests only, see
    :mod:`cadenza.failpoints`); empty in production."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        read = _Reader(env)
        port = read("CADENZA_HTTP_PORT", int, 8080, minimum=1, maximum=65535)
        host = read("CADENZA_HTTP_HOST", str, "0.0.0.0")
        lease = read("CADENZA_LEASE_SECONDS", int, 15, minimum=3, maximum=3600)
        acquire = read("CADENZA_ACQUIRE_TIMEOUT_SECONDS", int, 2, minimum=1, maximum=60)
        if acquire >= lease:
            raise SettingsError(
                f"CADENZA_ACQUIRE_TIMEOUT_SECONDS ({acquire}) must be below "
                f"CADENZA_LEASE_SECONDS ({lease})"
            )
        migrations = read("CADENZA_MIGRATIONS_DIR", str, "")
        namespaces = read("CADENZA_NAMESPACES", str, "")
        return cls(
            instance_id=read(
                "CADENZA_INSTANCE_ID", str, f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
            ),
            database=DatabaseSettings(
                url=_database_url(read("CADENZA_DATABASE_URL", str, DEFAULT_DATABASE_URL)),
                pool_size=read("CADENZA_DATABASE_POOL_SIZE", int, 8, minimum=1, maximum=512),
                connect_timeout=read(
                    "CADENZA_DATABASE_CONNECT_TIMEOUT", float, 5.0, minimum=0.1, maximum=300
                ),
                migrations_dir=Path(migrations) if migrations else None,
            ),
            leadership=LeadershipSettings(
                lock_name=read("CADENZA_LOCK_NAME", str, "cadenza.leader"),
                lease_seconds=lease,
                acquire_timeout_seconds=acquire,
                max_clock_skew_seconds=read(
                    "CADENZA_MAX_CLOCK_SKEW_SECONDS", float, 2.0, minimum=0.01, maximum=3600
                ),
            ),
            http=_http_settings(read, host, port),
            dispatch=DispatchSettings(ca_file=_ca_file(read, "CADENZA_DISPATCH_CA_FILE")),
            scheduling=SchedulingSettings(
                deadline_grace_seconds=read(
                    "CADENZA_DEADLINE_GRACE_SECONDS", float, 10.0, minimum=0, maximum=3600
                ),
                status_min_interval_seconds=read(
                    "CADENZA_STATUS_MIN_INTERVAL_SECONDS", float, 2.0, minimum=0.1, maximum=3600
                ),
                status_max_writes_per_second=read(
                    "CADENZA_STATUS_MAX_WRITES_PER_SECOND", float, 20.0, minimum=0.1, maximum=1000
                ),
                retention_interval_seconds=read(
                    "CADENZA_RETENTION_INTERVAL_SECONDS", float, 60.0, minimum=1, maximum=86400
                ),
                dispatch_token_grace_seconds=read(
                    "CADENZA_DISPATCH_TOKEN_GRACE_SECONDS", float, 300.0, minimum=0, maximum=86400
                ),
            ),
            kube=KubeSettings(
                namespaces=tuple(n.strip() for n in namespaces.split(",") if n.strip()),
                kubeconfig=env.get("KUBECONFIG") or None,
            ),
            webhook=_webhook_settings(read, http_host=host, http_port=port),
            api=_api_settings(read, namespaces),
            thread_pool_size=read("CADENZA_THREAD_POOL_SIZE", int, 16, minimum=2, maximum=512),
            log_level=read("CADENZA_LOG_LEVEL", str, "INFO").upper(),
            failpoints=_failpoints(env.get("CADENZA_FAILPOINTS", "")),
        )


def _failpoints(spec: str) -> dict[str, int]:
    try:
        return failpoints.parse(spec)
    except ValueError as exc:
        raise SettingsError(f"CADENZA_FAILPOINTS: {exc}") from None


def _api_settings(read: _Reader, namespaces: str) -> ApiSettings:
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


def _http_settings(read: _Reader, host: str, port: int) -> HttpSettings:
    pair = _serving_pair(read, "CADENZA_HTTP_TLS_CERT_FILE", "CADENZA_HTTP_TLS_KEY_FILE")
    scheme = "https" if pair else "http"
    advertise = read(
        "CADENZA_HTTP_ADVERTISE_URL",
        str,
        f"{scheme}://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}",
    )
    cert, key = pair or (None, None)
    return HttpSettings(
        host=host,
        port=port,
        advertise_url=advertise.rstrip("/"),
        tls_cert_file=cert,
        tls_key_file=key,
    )


def _serving_pair(read: _Reader, cert_var: str, key_var: str) -> tuple[Path, Path] | None:
    """Both files, readable and a certificate with its own key; None when neither is set."""
    cert, key = read(cert_var, str, ""), read(key_var, str, "")
    if not cert and not key:
        return None
    if not cert or not key:
        given, missing = (cert_var, key_var) if cert else (key_var, cert_var)
        raise SettingsError(
            f"{given} needs {missing}: set both, the certificate and its private key, or neither"
        )
    for name, path in ((cert_var, cert), (key_var, key)):
        if not (Path(path).is_file() and os.access(path, os.R_OK)):
            raise SettingsError(f"{name}={path!r} is not a readable file")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError, ValueError) as error:
        raise SettingsError(
            f"{cert_var}={cert!r} and {key_var}={key!r} are not a PEM certificate and its "
            f"private key: {error}"
        ) from None
    return Path(cert), Path(key)


def _ca_file(read: _Reader, name: str) -> Path | None:
    raw = read(name, str, "")
    if not raw:
        return None
    try:
        ssl.create_default_context(cafile=raw)
    except (ssl.SSLError, OSError) as error:
        raise SettingsError(f"{name}={raw!r} is not a readable PEM CA bundle: {error}") from None
    return Path(raw)


def _webhook_settings(read: _Reader, *, http_host: str, http_port: int) -> WebhookSettings:
    enabled = read(
        "CADENZA_WEBHOOK_ENABLED", boolean, bool(read("CADENZA_WEBHOOK_CERT_FILE", str, ""))
    )
    host = read("CADENZA_WEBHOOK_HOST", str, "0.0.0.0")
    port = read("CADENZA_WEBHOOK_PORT", int, 9443, minimum=1, maximum=65535)
    if not enabled:
        return WebhookSettings(enabled=False, host=host, port=port)
    pair = _serving_pair(read, "CADENZA_WEBHOOK_CERT_FILE", "CADENZA_WEBHOOK_KEY_FILE")
    if pair is None:
        raise SettingsError(
            "the webhook needs a serving certificate: set both CADENZA_WEBHOOK_CERT_FILE and "
            "CADENZA_WEBHOOK_KEY_FILE, or CADENZA_WEBHOOK_ENABLED=false"
        )
    if port == http_port and _same_interface(host, http_host):
        raise SettingsError(
            f"CADENZA_WEBHOOK_PORT ({port}) must differ from CADENZA_HTTP_PORT ({http_port})"
        )
    return WebhookSettings(enabled=True, host=host, port=port, cert_file=pair[0], key_file=pair[1])


def _same_interface(a: str, b: str) -> bool:
    return a == b or "0.0.0.0" in (a, b)


def boolean(raw: str) -> bool:
    """``true``/``false`` (also ``1``/``0``, ``yes``/``no``, ``on``/``off``, any case)."""
    value = raw.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError(raw)


def _database_url(raw: str) -> str:
    """The URL, if SQLAlchemy can parse it and it names MySQL (the password is never echoed)."""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise SettingsError(
            "CADENZA_DATABASE_URL is not a database URL; expected one like "
            "mysql+pymysql://user:password@host:3306/jobs"
        ) from None
    if not url.drivername.startswith(("mysql", "mariadb")):
        raise SettingsError(
            f"CADENZA_DATABASE_URL names {url.drivername!r}; Cadenza needs MySQL or MariaDB "
            "(mysql+pymysql://user:password@host:3306/jobs)"
        )
    return raw


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def __call__(
        self,
        name: str,
        kind: Callable[[str], T],
        default: T,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> T:
        raw = self._env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            value = kind(raw.strip())
        except ValueError:
            raise SettingsError(
                f"{name}={raw!r} is not a valid {getattr(kind, '__name__', 'value')}"
            ) from None
        if isinstance(value, int | float):
            if value != value or value in (float("inf"), float("-inf")):
                raise SettingsError(f"{name}={raw!r} is not a finite number")
            if minimum is not None and value < minimum:
                raise SettingsError(f"{name}={raw!r} is below the minimum {minimum}")
            if maximum is not None and value > maximum:
                raise SettingsError(f"{name}={raw!r} is above the maximum {maximum}")
        return value

"""The operator's settings: one frozen tree, read once from ``CADENZA_*`` environment variables.

Invariant: this is the only module that reads ``os.environ``; everything else receives the
:class:`Settings` it needs as an argument. A bad value fails at start with a message naming the
variable, never later.

Each section lives with its reader in a module of its own (``cadenza.settings.api`` holds
``ApiSettings`` and the ``CADENZA_API_*`` variables, and so on); this package is their public
face, and :meth:`Settings.from_env` reads them in a fixed order, so of several bad values the
same one is always reported.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from cadenza import failpoints
from cadenza.settings.api import ApiSettings, read_api
from cadenza.settings.database import DEFAULT_DATABASE_URL, DatabaseSettings, read_database
from cadenza.settings.dispatch import DispatchSettings, read_dispatch
from cadenza.settings.http import HttpSettings, read_http
from cadenza.settings.kube import KubeSettings, read_kube
from cadenza.settings.leadership import LeadershipSettings, read_leadership, read_lease
from cadenza.settings.reading import Reader, SettingsError
from cadenza.settings.scheduling import SchedulingSettings, read_scheduling
from cadenza.settings.webhook import WebhookSettings, read_webhook

__all__ = [
    "DEFAULT_DATABASE_URL",
    "ApiSettings",
    "DatabaseSettings",
    "DispatchSettings",
    "HttpSettings",
    "KubeSettings",
    "LeadershipSettings",
    "SchedulingSettings",
    "Settings",
    "SettingsError",
    "WebhookSettings",
]


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
        read = Reader(env)
        port = read("CADENZA_HTTP_PORT", int, 8080, minimum=1, maximum=65535)
        host = read("CADENZA_HTTP_HOST", str, "0.0.0.0")
        lease, acquire = read_lease(read)
        namespaces = read("CADENZA_NAMESPACES", str, "")
        return cls(
            instance_id=read(
                "CADENZA_INSTANCE_ID", str, f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
            ),
            database=read_database(read),
            leadership=read_leadership(read, lease, acquire),
            http=read_http(read, host, port),
            dispatch=read_dispatch(read),
            scheduling=read_scheduling(read),
            kube=read_kube(env, namespaces),
            webhook=read_webhook(read, http_host=host, http_port=port),
            api=read_api(read, namespaces),
            thread_pool_size=read("CADENZA_THREAD_POOL_SIZE", int, 16, minimum=2, maximum=512),
            log_level=read("CADENZA_LOG_LEVEL", str, "INFO").upper(),
            failpoints=_failpoints(env.get("CADENZA_FAILPOINTS", "")),
        )


def _failpoints(spec: str) -> dict[str, int]:
    try:
        return failpoints.parse(spec)
    except ValueError as exc:
        raise SettingsError(f"CADENZA_FAILPOINTS: {exc}") from None

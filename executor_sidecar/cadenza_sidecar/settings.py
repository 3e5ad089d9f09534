"""The sidecar's settings: one frozen tree, built once from command-line flags and the environment.

Invariants:
- Precedence is flag, then environment variable, then default. Every flag ``--some-name`` has an
  environment twin ``CADENZA_SIDECAR_SOME_NAME``; the pod name also honours the downward-API
  convention ``POD_NAME``, and ``CADENZA_SIDECAR_TOKEN`` carries the dispatch token itself.
- This is the only module that reads ``os.environ``; everything else receives settings explicitly.
- Exactly one handler mode is configured: ``--handler-url`` or ``--command``.
- The secrets and trust (dispatch and API tokens, TLS material, the handler user's distance from
  the token) are read and checked by :mod:`cadenza_sidecar.security_settings`, which keeps their
  invariants: no dispatch token is a refused start, not open dispatch.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cadenza_sidecar import flags, handler_user, security_settings
from cadenza_sidecar.flags import (
    DEFAULT_CALLBACK_BATCH_MAX_ITEMS,
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_BATCH_ITEMS,
    DEFAULT_SPOOL_DIR,
    DEFAULT_SPOOL_MAX_BYTES,
    DEFAULT_SPOOL_MAX_FILES,
    ENV_PREFIX,
)
from cadenza_sidecar.flags import SettingsError as SettingsError
from cadenza_sidecar.handler_user import HandlerUser
from cadenza_sidecar.security_settings import AuthSettings, ServerTls

# One result's spool record beyond its output fields: keys, timestamps, status, pod, ids, URLs and
# token of a typical dispatch. Only the floor of --spool-max-bytes uses it; reservations measure.
RECORD_OVERHEAD_BYTES = 2048


@dataclass(frozen=True)
class ServerSettings:
    listen: str = "0.0.0.0"
    """Address the HTTP server binds (``--listen``)."""

    port: int = 9090
    """TCP port of the HTTP server (``--port``); the operator dispatches to it."""

    max_batch_items: int = DEFAULT_MAX_BATCH_ITEMS
    """Most dispatch bodies one ``POST /v1/executions:batch`` may carry; more is a 400 naming
    ``executions`` (``--max-batch-items``)."""

    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    """Largest batch body in bytes, answered 413 above it (``--max-batch-bytes``). The single
    endpoint keeps the HTTP server's own 1 MiB limit."""

    tls: ServerTls | None = None
    """HTTPS for dispatch; None: plain HTTP (the default)."""


@dataclass(frozen=True)
class HandlerSettings:
    url: str | None = None
    """``--handler-url``: the application container's endpoint, POSTed once per run."""

    command: tuple[str, ...] | None = None
    """``--command``: argv run once per run; the payload arrives on stdin and in the environment."""

    child_env: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}))
    """Environment handed to commands: the sidecar's own minus ``CADENZA_SIDECAR_*``, so the
    dispatch token never leaks into user code."""

    kill_grace_seconds: float = 2.0
    """Time between SIGTERM and SIGKILL when a command is cancelled or times out."""

    max_output_bytes: int = 4096
    """Cap on each of a command's stdout and stderr and on a handler's HTTP response body as kept
    in a result or error; longer output is truncated with a marker."""

    user: HandlerUser | None = None
    """``--handler-user``: the uid and gid commands run as (no supplementary groups), so they
    cannot read the token file or the spool; None: the sidecar's own."""


@dataclass(frozen=True)
class RunSettings:
    max_concurrency: int = 4
    """Runs allowed in flight at once on this pod; one more is answered 429 busy."""

    finished_retention_seconds: float = 3600.0
    """How long a finished run stays answerable (GET, duplicate POST) from memory."""

    finished_retention_count: int = 10_000
    """At most this many finished runs are kept in memory; the oldest are forgotten first."""


@dataclass(frozen=True)
class CallbackSettings:
    request_timeout_seconds: float = 10.0
    """Timeout of one callback POST, connection included."""

    backoff_initial_seconds: float = 0.5
    """Delay before the first retry of a failed callback; it doubles per attempt, with jitter."""

    backoff_max_seconds: float = 30.0
    """Cap of the retry delay; retries continue forever at this pace while the process lives."""

    batch_max_items: int = DEFAULT_CALLBACK_BATCH_MAX_ITEMS
    """Most reports posted together to one ``callbackBatchUrl``; more wait for the next batch."""

    allowed_urls: tuple[str, ...] = ()
    """``--callback-allow``: the only callback URLs (by prefix) a dispatch may name, so results
    go to the operator and nowhere else; a dispatch naming another is refused 400. Empty: any
    (logged as a warning at start)."""

    ca_file: Path | None = None
    """``--callback-ca-file``: PEM bundle of the CAs an ``https://`` callback URL (and the
    ``--scheduler-url``) is verified against, host name included; None: the system trust
    store. Read once at start."""


@dataclass(frozen=True)
class SpoolSettings:
    directory: Path = DEFAULT_SPOOL_DIR
    """``--spool-dir``: where finished results wait, fsynced, until their callback is settled."""

    max_files: int = DEFAULT_SPOOL_MAX_FILES
    """``--spool-max-files``: most results the spool holds, counting one reserved per run in
    flight; at the limit a new dispatch is answered 429 busy."""

    max_bytes: int = DEFAULT_SPOOL_MAX_BYTES
    """``--spool-max-bytes``: most bytes of spool records, counting each run in flight at its
    reservation; at the limit a new dispatch is answered 429 busy."""

    output_reserve_bytes: int = 2 * 4096 + 1024
    """Bytes reserved per run for its ``result`` and ``error`` as JSON: room for both output
    streams at ``--max-output-bytes`` plus their prefixes and markers. A result that still does
    not fit (escaped control characters grow sixfold) is truncated to fit, saying so."""


@dataclass(frozen=True)
class DrainSettings:
    grace_seconds: float = 30.0
    """On SIGTERM, how long in-flight runs may still finish before they are cancelled."""

    flush_seconds: float = 5.0
    """After the runs, how long pending callbacks may still be delivered; what is left stays in
    the spool. The pod's terminationGracePeriodSeconds should exceed grace + flush + kill grace."""


@dataclass(frozen=True)
class RegistrationSettings:
    """Registration with a Cadenza REST API as an executor outside the cluster (the original
    system's sample executor); set when ``--scheduler-url`` is."""

    scheduler_url: str
    """``--scheduler-url``: any replica's REST API, e.g. ``http://cadenza.cadenza:8080``."""

    executor_name: str
    """``--executor-name``: the Executor this instance joins (created by the first one)."""

    instance_id: str
    """``--instance-id``: unique in the namespace (default: the pod name)."""

    advertise_url: str
    """``--advertise-url``: where the scheduler reaches this sidecar (default
    ``http://<listen>:<port>``, ``https://`` with ``--tls-cert-file``; required when listening
    on every address)."""

    tasks: tuple[tuple[str, str | None], ...] = ()
    """``--task NAME[=CRON]`` (repeatable; ``CADENZA_SIDECAR_TASKS`` separated by ';'): the Tasks
    served; one that does not exist is created with CRON."""

    api_token: str | None = None
    """Bearer token for the REST API (``--api-token-file`` or ``CADENZA_SIDECAR_API_TOKEN``), a
    Kubernetes token allowed to register (see docs/api.md)."""

    heartbeat_seconds: int = 10
    """``--heartbeat-seconds``: how often to heartbeat; also the interval the Executor expects."""

    namespace: str | None = None
    """``--namespace``: the Executor's namespace (default: the API's default namespace)."""


@dataclass(frozen=True)
class Settings:
    pod_name: str
    """Name reported in responses and callbacks (``--pod-name``, ``POD_NAME``, else hostname)."""

    server: ServerSettings
    """Where the HTTP API listens."""

    auth: AuthSettings
    """How dispatches are authenticated."""

    handler: HandlerSettings
    """How a run's handler is invoked (HTTP or command) and how its output is kept."""

    runs: RunSettings
    """Admission and memory of runs."""

    callbacks: CallbackSettings
    """Delivery of results to the operator."""

    spool: SpoolSettings
    """Durable storage of results until delivered."""

    drain: DrainSettings
    """Shutdown on SIGTERM."""

    log_level: str = "info"
    """Lowest level logged: debug, info, warning or error."""

    registration: RegistrationSettings | None = None
    """Self-registration with the scheduler; None: the operator finds this sidecar's pod."""


def _handler(
    args: argparse.Namespace, resolve: flags.Resolver, environ: Mapping[str, str]
) -> HandlerSettings:
    url = resolve.get("handler_url", flags.http_url, None)
    command: tuple[str, ...] | None = None
    if args.command is not None:
        if not args.command:
            raise SettingsError("--command needs the program to run, e.g. --command ./job.sh")
        command = tuple(args.command)
    elif environ.get(ENV_PREFIX + "COMMAND"):
        command = tuple(shlex.split(environ[ENV_PREFIX + "COMMAND"])) or None
    if (url is None) == (command is None):
        raise SettingsError(
            "give exactly one handler mode: --handler-url URL (call the app container) "
            "or --command CMD... (run a program per execution)"
        )
    child_env = {k: v for k, v in environ.items() if not k.startswith(ENV_PREFIX)}
    return HandlerSettings(
        url=url,
        command=command,
        child_env=types.MappingProxyType(child_env),
        kill_grace_seconds=resolve.get("kill_grace_seconds", flags.non_negative_float, 2.0),
        max_output_bytes=resolve.get("max_output_bytes", flags.positive_int, 4096),
        user=resolve.get("handler_user", handler_user.parse, None),
    )


def _spool(resolve: flags.Resolver, max_output_bytes: int) -> SpoolSettings:
    reserve = 2 * max_output_bytes + 1024
    spool = SpoolSettings(
        directory=resolve.get("spool_dir", Path, DEFAULT_SPOOL_DIR),
        max_files=resolve.get("spool_max_files", flags.positive_int, DEFAULT_SPOOL_MAX_FILES),
        max_bytes=resolve.get("spool_max_bytes", flags.positive_int, DEFAULT_SPOOL_MAX_BYTES),
        output_reserve_bytes=reserve,
    )
    floor = reserve + RECORD_OVERHEAD_BYTES
    if spool.max_bytes < floor:
        raise SettingsError(
            f"--spool-max-bytes {spool.max_bytes} (or {ENV_PREFIX}SPOOL_MAX_BYTES) cannot hold one"
            f" result of --max-output-bytes {max_output_bytes}: give at least {floor}"
        )
    return spool


def load(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Parses the command line and the environment into settings.

    Raises SettingsError for unusable combinations; argparse itself exits with status 2 on
    malformed flags.
    """
    env = os.environ if environ is None else environ
    args = flags.build_parser().parse_args(argv)
    resolve = flags.Resolver(args, env)
    pod_name = args.pod_name or env.get("POD_NAME") or env.get(ENV_PREFIX + "POD_NAME")
    handler = _handler(args, resolve, env)
    loaded = Settings(
        pod_name=pod_name or socket.gethostname(),
        server=ServerSettings(
            listen=resolve.get("listen", str, "0.0.0.0"),
            port=resolve.get("port", flags.port, 9090),
            max_batch_items=resolve.get(
                "max_batch_items", flags.positive_int, DEFAULT_MAX_BATCH_ITEMS
            ),
            max_batch_bytes=resolve.get(
                "max_batch_bytes", flags.positive_int, DEFAULT_MAX_BATCH_BYTES
            ),
            tls=security_settings.server_tls(resolve),
        ),
        auth=security_settings.auth_settings(resolve, env),
        handler=handler,
        runs=RunSettings(
            max_concurrency=resolve.get("max_concurrency", flags.positive_int, 4),
            finished_retention_seconds=resolve.get(
                "finished_retention_seconds", flags.positive_float, 3600.0
            ),
            finished_retention_count=resolve.get(
                "finished_retention_count", flags.positive_int, 10_000
            ),
        ),
        callbacks=CallbackSettings(
            request_timeout_seconds=resolve.get(
                "callback_timeout_seconds", flags.positive_float, 10.0
            ),
            backoff_initial_seconds=resolve.get(
                "callback_backoff_initial_seconds", flags.positive_float, 0.5
            ),
            backoff_max_seconds=resolve.get(
                "callback_backoff_max_seconds", flags.positive_float, 30.0
            ),
            batch_max_items=resolve.get(
                "callback_batch_max_items", flags.positive_int, DEFAULT_CALLBACK_BATCH_MAX_ITEMS
            ),
            allowed_urls=resolve.get("callback_allow", flags.url_prefixes, ()),
            ca_file=security_settings.callback_ca_file(resolve),
        ),
        spool=_spool(resolve, handler.max_output_bytes),
        drain=DrainSettings(
            grace_seconds=resolve.get("grace_seconds", flags.non_negative_float, 30.0),
            flush_seconds=resolve.get("flush_seconds", flags.non_negative_float, 5.0),
        ),
        log_level=resolve.get("log_level", flags.log_level, "info"),
        registration=_registration(args, resolve, env, pod_name or socket.gethostname()),
    )
    security_settings.check_token(loaded.auth, registers=loaded.registration is not None)
    if loaded.handler.user is not None:
        if loaded.handler.command is None:
            raise SettingsError(
                "--handler-user applies to --command only: in --handler-url mode the handler is"
                " another container, which simply does not mount the token or spool volumes"
            )
        security_settings.check_handler_user(loaded.handler.user, loaded.auth.token_file)
    return loaded


def _registration(
    args: argparse.Namespace, resolve: flags.Resolver, environ: Mapping[str, str], pod_name: str
) -> RegistrationSettings | None:
    scheduler = resolve.get("scheduler_url", flags.http_url, None)
    if scheduler is None:
        return None
    name = resolve.get("executor_name", str, None)
    if not name:
        raise SettingsError("--scheduler-url needs --executor-name: the Executor to join")
    listen, port = resolve.get("listen", str, "0.0.0.0"), resolve.get("port", flags.port, 9090)
    advertise = resolve.get("advertise_url", flags.http_url, None)
    if advertise is None:
        if listen in ("0.0.0.0", "::", ""):
            raise SettingsError(
                "--scheduler-url needs --advertise-url when listening on every address:"
                " give the URL the scheduler reaches this sidecar at"
            )
        host = f"[{listen}]" if ":" in listen else listen
        scheme = "https" if resolve.get("tls_cert_file", Path, None) else "http"
        advertise = f"{scheme}://{host}:{port}"
    raw_tasks = args.task or [t for t in environ.get(ENV_PREFIX + "TASKS", "").split(";") if t]
    tasks = tuple(
        (name_.strip(), cron.strip() or None) if sep else (name_.strip(), None)
        for name_, sep, cron in (t.partition("=") for t in raw_tasks)
    )
    return RegistrationSettings(
        scheduler_url=scheduler.rstrip("/"),
        executor_name=name,
        instance_id=resolve.get("instance_id", str, pod_name),
        advertise_url=advertise.rstrip("/"),
        tasks=tasks,
        api_token=security_settings.secret_file(resolve, environ, "api_token_file", "API_TOKEN"),
        heartbeat_seconds=resolve.get("heartbeat_seconds", flags.positive_int, 10),
        namespace=resolve.get("namespace", str, None),
    )

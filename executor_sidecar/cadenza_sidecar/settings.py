"""The sidecar's settings: one frozen tree, built once from command-line flags and the environment.

Invariants:
- Precedence is flag, then environment variable, then default. Every flag ``--some-name`` has an
  environment twin ``CADENZA_SIDECAR_SOME_NAME``; the pod name also honours the downward-API
  convention ``POD_NAME``, and ``CADENZA_SIDECAR_TOKEN`` carries the dispatch token itself.
- This is the only module that reads ``os.environ``; everything else receives settings explicitly.
- Exactly one handler mode is configured: ``--handler-url`` or ``--command``.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import socket
import types
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

ENV_PREFIX = "CADENZA_SIDECAR_"
DEFAULT_SPOOL_DIR = Path("/var/run/cadenza/spool")
DEFAULT_MAX_BATCH_ITEMS = 1000
DEFAULT_MAX_BATCH_BYTES = 8 * 1024 * 1024
DEFAULT_CALLBACK_BATCH_MAX_ITEMS = 200
LOG_LEVELS = ("debug", "info", "warning", "error")

T = TypeVar("T")


class SettingsError(Exception):
    """A flag or environment variable has an unusable value; the message names it and the fix."""


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


@dataclass(frozen=True)
class AuthSettings:
    token: str | None = None
    """Dispatch token expected as ``Authorization: Bearer <token>`` on ``/v1/*``.

    Read from ``--token-file`` (surrounding whitespace stripped) or ``CADENZA_SIDECAR_TOKEN``.
    ``None`` disables the check, which the sidecar logs as a warning at start.
    """


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


@dataclass(frozen=True)
class SpoolSettings:
    directory: Path = DEFAULT_SPOOL_DIR
    """``--spool-dir``: where finished results wait, fsynced, until their callback is settled."""


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
    ``http://<listen>:<port>``, required when listening on every address)."""

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


def _number(raw: str, kind: Callable[[str], T], rule: str, valid: Callable[[T], bool]) -> T:
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"must be {rule}") from None
    if not valid(value):
        raise ValueError(f"must be {rule}")
    return value


def _positive_int(raw: str) -> int:
    return _number(raw, int, "an integer >= 1", lambda v: v >= 1)


def _port(raw: str) -> int:
    return _number(raw, int, "a port number between 0 and 65535", lambda v: 0 <= v <= 65535)


def _positive_float(raw: str) -> float:
    return _number(raw, float, "a finite number > 0", lambda v: 0 < v < math.inf)


def _non_negative_float(raw: str) -> float:
    return _number(raw, float, "a finite number >= 0", lambda v: 0 <= v < math.inf)


def _http_url(raw: str) -> str:
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL such as http://127.0.0.1:8080/run")
    return raw


def _log_level(raw: str) -> str:
    if raw.lower() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return raw.lower()


def _for_argparse(convert: Callable[[str], T]) -> Callable[[str], T]:
    """Turns a converter's ValueError into argparse's error message (which names the flag)."""

    def wrapper(raw: str) -> T:
        try:
            return convert(raw)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{raw!r} {exc}") from None

    wrapper.__name__ = convert.__name__.lstrip("_")
    return wrapper


def build_parser() -> argparse.ArgumentParser:
    """The command line; every flag defaults to None so the environment can fill it in."""
    parser = argparse.ArgumentParser(
        prog="cadenza-sidecar",
        description="Runs Cadenza executions next to an application container. Every flag "
        "--some-name can also be set as CADENZA_SIDECAR_SOME_NAME.",
    )
    add = parser.add_argument
    seconds, count = _for_argparse(_non_negative_float), _for_argparse(_positive_int)
    positive_seconds = _for_argparse(_positive_float)
    add("--listen", metavar="HOST", help="address to bind (default 0.0.0.0)")
    add("--port", metavar="N", type=_for_argparse(_port), help="port to bind (default 9090)")
    add("--pod-name", metavar="NAME", help="reported pod name (default $POD_NAME, else hostname)")
    add(
        "--token-file",
        metavar="PATH",
        type=Path,
        help=f"file holding the dispatch token (default ${ENV_PREFIX}TOKEN; none: no auth)",
    )
    add("--handler-url", metavar="URL", type=_for_argparse(_http_url), help="POST each run here")
    add(
        "--command",
        nargs=argparse.REMAINDER,
        metavar="CMD",
        help="run this argv per run; must come last, everything after it is the command",
    )
    add("--max-concurrency", metavar="N", type=count, help="runs in flight per pod (default 4)")
    add(
        "--max-batch-items",
        metavar="N",
        type=count,
        help=f"dispatch bodies per batch (default {DEFAULT_MAX_BATCH_ITEMS})",
    )
    add(
        "--max-batch-bytes",
        metavar="N",
        type=count,
        help=f"largest batch body (default {DEFAULT_MAX_BATCH_BYTES})",
    )
    add(
        "--spool-dir", metavar="PATH", type=Path, help=f"result spool (default {DEFAULT_SPOOL_DIR})"
    )
    add("--grace-seconds", metavar="S", type=seconds, help="drain: time for runs (default 30)")
    add("--flush-seconds", metavar="S", type=seconds, help="drain: time for callbacks (default 5)")
    add("--kill-grace-seconds", metavar="S", type=seconds, help="SIGTERM to SIGKILL (default 2)")
    add("--max-output-bytes", metavar="N", type=count, help="cap per output (default 4096)")
    add("--callback-timeout-seconds", metavar="S", type=positive_seconds, help="(default 10)")
    add("--callback-backoff-initial-seconds", metavar="S", type=positive_seconds, help="(0.5)")
    add("--callback-backoff-max-seconds", metavar="S", type=positive_seconds, help="(30)")
    add(
        "--callback-batch-max-items",
        metavar="N",
        type=count,
        help=f"reports per batched callback ({DEFAULT_CALLBACK_BATCH_MAX_ITEMS})",
    )
    add("--finished-retention-seconds", metavar="S", type=positive_seconds, help="(3600)")
    add("--finished-retention-count", metavar="N", type=count, help="(10000)")
    add("--log-level", type=_for_argparse(_log_level), help="debug|info|warning|error (info)")
    add(
        "--scheduler-url",
        metavar="URL",
        type=_for_argparse(_http_url),
        help="register with this Cadenza REST API as an executor outside the cluster",
    )
    add("--executor-name", metavar="NAME", help="the Executor to join (with --scheduler-url)")
    add("--instance-id", metavar="ID", help="this instance's id (default: the pod name)")
    add(
        "--advertise-url",
        metavar="URL",
        type=_for_argparse(_http_url),
        help="where the scheduler reaches this sidecar (default http://<listen>:<port>)",
    )
    add("--task", metavar="NAME[=CRON]", action="append", help="a Task served (repeatable)")
    add(
        "--api-token-file",
        metavar="PATH",
        type=Path,
        help=f"bearer token for the REST API (default ${ENV_PREFIX}API_TOKEN)",
    )
    add("--heartbeat-seconds", metavar="N", type=count, help="heartbeat interval (default 10)")
    add("--namespace", metavar="NS", help="the Executor's namespace (default: the API's)")
    return parser  # fmt: skip


class _Resolver:
    """Picks each value from the parsed flags, else the environment, else the default."""

    def __init__(self, args: argparse.Namespace, environ: Mapping[str, str]) -> None:
        self._args = args
        self._environ = environ

    def get(self, name: str, convert: Callable[[str], T], default: T) -> T:
        flag_value: T | None = getattr(self._args, name)
        if flag_value is not None:
            return flag_value
        env_name = ENV_PREFIX + name.upper()
        raw = self._environ.get(env_name, "")
        if not raw:
            return default
        try:
            return convert(raw)
        except ValueError as exc:
            raise SettingsError(f"{env_name}={raw!r} {exc}") from None


def _token(resolve: _Resolver, environ: Mapping[str, str]) -> str | None:
    token_file = resolve.get("token_file", Path, None)
    if token_file is None:
        return environ.get(ENV_PREFIX + "TOKEN") or None
    try:
        token = token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SettingsError(f"--token-file {token_file}: cannot read it ({exc.strerror})") from None
    if not token:
        raise SettingsError(f"--token-file {token_file} is empty; put the dispatch token in it")
    return token


def _handler(
    args: argparse.Namespace, resolve: _Resolver, environ: Mapping[str, str]
) -> HandlerSettings:
    url = resolve.get("handler_url", _http_url, None)
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
        kill_grace_seconds=resolve.get("kill_grace_seconds", _non_negative_float, 2.0),
        max_output_bytes=resolve.get("max_output_bytes", _positive_int, 4096),
    )


def load(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Parses the command line and the environment into settings.

    Raises SettingsError for unusable combinations; argparse itself exits with status 2 on
    malformed flags.
    """
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    resolve = _Resolver(args, env)
    pod_name = args.pod_name or env.get("POD_NAME") or env.get(ENV_PREFIX + "POD_NAME")
    return Settings(
        pod_name=pod_name or socket.gethostname(),
        server=ServerSettings(
            listen=resolve.get("listen", str, "0.0.0.0"),
            port=resolve.get("port", _port, 9090),
            max_batch_items=resolve.get("max_batch_items", _positive_int, DEFAULT_MAX_BATCH_ITEMS),
            max_batch_bytes=resolve.get("max_batch_bytes", _positive_int, DEFAULT_MAX_BATCH_BYTES),
        ),
        auth=AuthSettings(token=_token(resolve, env)),
        handler=_handler(args, resolve, env),
        runs=RunSettings(
            max_concurrency=resolve.get("max_concurrency", _positive_int, 4),
            finished_retention_seconds=resolve.get(
                "finished_retention_seconds", _positive_float, 3600.0
            ),
            finished_retention_count=resolve.get("finished_retention_count", _positive_int, 10_000),
        ),
        callbacks=CallbackSettings(
            request_timeout_seconds=resolve.get("callback_timeout_seconds", _positive_float, 10.0),
            backoff_initial_seconds=resolve.get(
                "callback_backoff_initial_seconds", _positive_float, 0.5
            ),
            backoff_max_seconds=resolve.get("callback_backoff_max_seconds", _positive_float, 30.0),
            batch_max_items=resolve.get(
                "callback_batch_max_items", _positive_int, DEFAULT_CALLBACK_BATCH_MAX_ITEMS
            ),
        ),
        spool=SpoolSettings(directory=resolve.get("spool_dir", Path, DEFAULT_SPOOL_DIR)),
        drain=DrainSettings(
            grace_seconds=resolve.get("grace_seconds", _non_negative_float, 30.0),
            flush_seconds=resolve.get("flush_seconds", _non_negative_float, 5.0),
        ),
        log_level=resolve.get("log_level", _log_level, "info"),
        registration=_registration(args, resolve, env, pod_name or socket.gethostname()),
    )


def _registration(
    args: argparse.Namespace, resolve: _Resolver, environ: Mapping[str, str], pod_name: str
) -> RegistrationSettings | None:
    scheduler = resolve.get("scheduler_url", _http_url, None)
    if scheduler is None:
        return None
    name = resolve.get("executor_name", str, None)
    if not name:
        raise SettingsError("--scheduler-url needs --executor-name: the Executor to join")
    listen, port = resolve.get("listen", str, "0.0.0.0"), resolve.get("port", _port, 9090)
    advertise = resolve.get("advertise_url", _http_url, None)
    if advertise is None:
        if listen in ("0.0.0.0", "::", ""):
            raise SettingsError(
                "--scheduler-url needs --advertise-url when listening on every address:"
                " give the URL the scheduler reaches this sidecar at"
            )
        host = f"[{listen}]" if ":" in listen else listen
        advertise = f"http://{host}:{port}"
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
        api_token=_secret_file(resolve, environ, "api_token_file", "API_TOKEN"),
        heartbeat_seconds=resolve.get("heartbeat_seconds", _positive_int, 10),
        namespace=resolve.get("namespace", str, None),
    )


def _secret_file(
    resolve: _Resolver, environ: Mapping[str, str], flag: str, env_name: str
) -> str | None:
    path = resolve.get(flag, Path, None)
    if path is None:
        return environ.get(ENV_PREFIX + env_name) or None
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        option = "--" + flag.replace("_", "-")
        raise SettingsError(f"{option} {path}: cannot read it ({exc.strerror})") from None
    return value or None

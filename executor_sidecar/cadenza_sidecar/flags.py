"""The command line of ``cadenza-sidecar`` and its environment twins: every flag, its converter,
the defaults its help advertises, and the resolver that picks a flag, else its variable, else the
default.

Invariants:
- Every flag defaults to None, so ``Resolver`` can tell "not given" from a value and fall back to
  the environment twin ``CADENZA_SIDECAR_SOME_NAME``, then to the default.
- A converter raises ValueError with the rule the value broke ("must be an integer >= 1"); argparse
  (for flags) and ``Resolver`` (for variables, as SettingsError) put the name in front of it, so
  every message names what to fix.
- The environment is handed in; only ``settings`` reads ``os.environ``.
"""

from __future__ import annotations

import argparse
import math
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from cadenza_sidecar import handler_user

ENV_PREFIX = "CADENZA_SIDECAR_"
DEFAULT_SPOOL_DIR = Path("/var/run/cadenza/spool")
DEFAULT_SPOOL_MAX_FILES = 4096
DEFAULT_SPOOL_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_BATCH_ITEMS = 1000
DEFAULT_MAX_BATCH_BYTES = 8 * 1024 * 1024
DEFAULT_CALLBACK_BATCH_MAX_ITEMS = 200
DEFAULT_TOKEN_GRACE_SECONDS = 300.0
DEFAULT_TOKEN_POLL_SECONDS = 2.0
DEFAULT_TLS_POLL_SECONDS = 10.0
LOG_LEVELS = ("debug", "info", "warning", "error")

T = TypeVar("T")


class SettingsError(Exception):
    """A flag or environment variable has an unusable value; the message names it and the fix."""


def _number(raw: str, kind: Callable[[str], T], rule: str, valid: Callable[[T], bool]) -> T:
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"must be {rule}") from None
    if not valid(value):
        raise ValueError(f"must be {rule}")
    return value


def positive_int(raw: str) -> int:
    return _number(raw, int, "an integer >= 1", lambda v: v >= 1)


def port(raw: str) -> int:
    return _number(raw, int, "a port number between 0 and 65535", lambda v: 0 <= v <= 65535)


def positive_float(raw: str) -> float:
    return _number(raw, float, "a finite number > 0", lambda v: 0 < v < math.inf)


def non_negative_float(raw: str) -> float:
    return _number(raw, float, "a finite number >= 0", lambda v: 0 <= v < math.inf)


def http_url(raw: str) -> str:
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL such as http://127.0.0.1:8080/run")
    return raw


def boolean(raw: str) -> bool:
    """``true``/``false`` (also ``1``/``0``, ``yes``/``no``, ``on``/``off``), for variables."""
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def url_prefixes(raw: str) -> tuple[str, ...]:
    """Comma-separated absolute http(s) URLs (``http://cadenza.cadenza-system.svc:8080/``)."""
    prefixes = tuple(p.strip() for p in raw.split(",") if p.strip())
    for prefix in prefixes:
        parts = urllib.parse.urlsplit(prefix)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be absolute http(s) URLs, separated by commas: {prefix!r}")
    if not prefixes:
        raise ValueError("must name at least one URL")
    return prefixes


def log_level(raw: str) -> str:
    if raw.lower() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return raw.lower()


def for_argparse(convert: Callable[[str], T]) -> Callable[[str], T]:
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
    seconds, count = for_argparse(non_negative_float), for_argparse(positive_int)
    positive_seconds = for_argparse(positive_float)
    add("--listen", metavar="HOST", help="address to bind (default 0.0.0.0)")
    add("--port", metavar="N", type=for_argparse(port), help="port to bind (default 9090)")
    add("--pod-name", metavar="NAME", help="reported pod name (default $POD_NAME, else hostname)")
    add(
        "--token-file",
        metavar="PATH",
        type=Path,
        help=f"file holding the dispatch token (default ${ENV_PREFIX}TOKEN); required unless"
        " --scheduler-url or --insecure-no-auth",
    )
    add(
        "--token-grace-seconds",
        metavar="S",
        type=seconds,
        help=f"after the token file changes, the old token is still accepted this long"
        f" (default {DEFAULT_TOKEN_GRACE_SECONDS:g})",
    )
    add(
        "--token-poll-seconds",
        metavar="S",
        type=positive_seconds,
        help=f"how often the token file is checked for a change"
        f" (default {DEFAULT_TOKEN_POLL_SECONDS:g})",
    )
    add(
        "--tls-cert-file",
        metavar="PATH",
        type=Path,
        help="serve HTTPS with this PEM certificate (chain after it); needs --tls-key-file and"
        " must name the address the operator dials (the pod IP)",
    )
    add("--tls-key-file", metavar="PATH", type=Path, help="PEM private key of --tls-cert-file")
    add(
        "--tls-poll-seconds",
        metavar="S",
        type=positive_seconds,
        help=f"how often the TLS files are checked for a renewal (default"
        f" {DEFAULT_TLS_POLL_SECONDS:g})",
    )
    add(
        "--callback-ca-file",
        metavar="PATH",
        type=Path,
        help="PEM CA bundle https callback and scheduler URLs are verified against (default:"
        " the system trust store)",
    )
    add(
        "--insecure-no-auth",
        action="store_const",
        const=True,
        help="development only: start without a dispatch token, so ANY caller that reaches the"
        " port can run handlers",
    )
    add("--handler-url", metavar="URL", type=for_argparse(http_url), help="POST each run here")
    add(
        "--handler-user",
        metavar="NAME|UID[:GID]",
        type=for_argparse(handler_user.parse),
        help="run commands as this user (needs root or CAP_SETUID/CAP_SETGID), so they cannot"
        " read the token file or the spool",
    )
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
    add(
        "--spool-max-files",
        metavar="N",
        type=count,
        help=f"results spooled or in flight before dispatches get 429 ({DEFAULT_SPOOL_MAX_FILES})",
    )
    add(
        "--spool-max-bytes",
        metavar="N",
        type=count,
        help=f"bytes spooled or reserved before dispatches get 429 ({DEFAULT_SPOOL_MAX_BYTES})",
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
    add(
        "--callback-allow",
        metavar="URL[,URL]",
        type=for_argparse(url_prefixes),
        help="callback URLs accepted in dispatches, by prefix (default: any, with a warning)",
    )
    add("--finished-retention-seconds", metavar="S", type=positive_seconds, help="(3600)")
    add("--finished-retention-count", metavar="N", type=count, help="(10000)")
    add("--log-level", type=for_argparse(log_level), help="debug|info|warning|error (info)")
    add(
        "--scheduler-url",
        metavar="URL",
        type=for_argparse(http_url),
        help="register with this Cadenza REST API as an executor outside the cluster",
    )
    add("--executor-name", metavar="NAME", help="the Executor to join (with --scheduler-url)")
    add("--instance-id", metavar="ID", help="this instance's id (default: the pod name)")
    add(
        "--advertise-url",
        metavar="URL",
        type=for_argparse(http_url),
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


class Resolver:
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

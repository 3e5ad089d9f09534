"""Which API to call, with which token and namespace: flags, then the environment, then the
current kubeconfig context. Each of the three is resolved on its own, so the demo's
``CADENZA_TOKEN`` works with an API found in the kubeconfig and the other way round.

- API URL: ``--api``, ``CADENZA_API``, the context's ``cadenza.dev/api`` extension ``server``.
- Token: ``--token``, ``--token-file``, ``CADENZA_TOKEN``, the extension's ``tokenFile``, the
  context user's ``token`` or ``tokenFile``. None found is not an error here: an API that needs
  one answers 401, and that message says where to set it.
- Namespace: ``-n``, the context's ``namespace``, else none: the API's default namespace
  (``CADENZA_API_DEFAULT_NAMESPACE``).
- TLS: ``--ca-file`` or the extension's ``certificate-authority``;
  ``--insecure-skip-tls-verify`` or the extension's.

The kubeconfig is read only when a flag or variable leaves something open.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cadenza.commands import kubeconfig
from cadenza.commands.errors import usage


@dataclass(frozen=True)
class Flags:
    """The connection flags as given (None when absent)."""

    api: str | None = None
    token: str | None = None
    token_file: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    ca_file: str | None = None
    insecure: bool = False


@dataclass(frozen=True)
class Target:
    """Where the commands send their requests."""

    url: str
    """The API's base URL, without a trailing slash."""
    token: str | None
    namespace: str | None
    namespace_given: bool
    """``-n`` was given (a body's own ``namespace`` loses to it, and wins over a context's)."""
    ca_file: Path | None = None
    insecure: bool = False
    hint: str = ""
    """Where a token could be set, for a 401's message."""


def resolve(flags: Flags, env: Mapping[str, str], home: Path) -> Target:
    context: kubeconfig.Context | None = None
    url = flags.api or env.get("CADENZA_API") or None
    token = flags.token or _read_token(flags.token_file) or env.get("CADENZA_TOKEN") or None
    if not (url and token and flags.namespace):
        paths = kubeconfig.files(flags.kubeconfig, env, home)
        context = kubeconfig.load(paths, flags.context)
    ext = context.api if context else None
    if not url:
        if ext is None:
            raise usage(_no_api(context))
        url = ext.server
    if not token and context is not None:
        token = _context_token(context)
    ca = flags.ca_file or None
    return Target(
        url=_checked_url(url, flags, env),
        token=token,
        namespace=flags.namespace or (context.namespace if context else None),
        namespace_given=bool(flags.namespace),
        ca_file=Path(ca).expanduser() if ca else (ext.ca_file if ext else None),
        insecure=flags.insecure or bool(ext and ext.insecure),
        hint=_token_hint(context),
    )


def _read_token(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return Path(path).expanduser().read_text().strip() or None
    except OSError as exc:
        raise usage(f"--token-file {path}: {exc.strerror}") from None


def _context_token(context: kubeconfig.Context) -> str | None:
    for source in (context.api.token_file if context.api else None, context.token_file):
        if source is None:
            continue
        try:
            return source.read_text().strip() or None
        except OSError as exc:
            raise usage(
                f"kubeconfig context {context.name!r}: token file {source}: {exc.strerror}"
            ) from None
    return context.token


def _checked_url(url: str, flags: Flags, env: Mapping[str, str]) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        origin = "--api" if flags.api else "CADENZA_API" if env.get("CADENZA_API") else EXT_NAME
        raise usage(f"{origin} must be an http:// or https:// URL, got {url!r}")
    return url.rstrip("/")


EXT_NAME = f"the kubeconfig extension {kubeconfig.EXTENSION}"


def _no_api(context: kubeconfig.Context | None) -> str:
    where = (
        f"or add the extension {kubeconfig.EXTENSION} {{server: URL}} to kubeconfig context"
        f" {context.name!r}"
        if context
        else f"or a kubeconfig context with the extension {kubeconfig.EXTENSION}"
    )
    return f"cannot find the Cadenza API: pass --api URL, set CADENZA_API, {where} (docs/cli.md)"


def _token_hint(context: kubeconfig.Context | None) -> str:
    hint = "pass --token or --token-file, or set CADENZA_TOKEN"
    if context is not None and context.other_auth:
        hint += (
            f" (kubeconfig user {context.user!r} authenticates with {context.other_auth},"
            " which the Cadenza API does not accept)"
        )
    return hint

"""The sidecar's secrets and trust among its settings: the dispatch token and its file, the REST
API token, the serving TLS pair, the callback CA bundle, and the handler user's distance from the
token. :mod:`cadenza_sidecar.settings` builds the rest of the tree and calls these readers.

Invariants:
- Without a dispatch token the sidecar refuses to start, unless it registers with a scheduler
  (which answers the token) or ``--insecure-no-auth`` says so: open dispatch is never a default.
- TLS is off unless configured, and both of ``--tls-cert-file`` and ``--tls-key-file`` or
  neither are given; the pair, and ``--callback-ca-file``, are loaded once here, so a file that
  cannot serve stops the start with a message naming the flag (:mod:`cadenza_sidecar.tls`).
- With ``--handler-user`` the sidecar can switch to that user and the token file is not readable
  by it, or the start is refused (:mod:`cadenza_sidecar.handler_user`).
- Nothing here reads ``os.environ``: the environment is handed in by ``settings``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cadenza_sidecar import dispatch_tokens, flags, handler_user, tls
from cadenza_sidecar.flags import (
    DEFAULT_TLS_POLL_SECONDS,
    DEFAULT_TOKEN_GRACE_SECONDS,
    DEFAULT_TOKEN_POLL_SECONDS,
    ENV_PREFIX,
    SettingsError,
)
from cadenza_sidecar.handler_user import HandlerUser


@dataclass(frozen=True)
class ServerTls:
    """``--tls-cert-file`` and ``--tls-key-file``: the sidecar serves HTTPS with this pair."""

    cert_file: Path
    """PEM serving certificate, its chain after it. The operator dials the pod by IP and checks
    the certificate against it, so it must hold the pod IP as an IP SAN (the host of
    ``baseUrl`` for an endpoint outside the cluster)."""

    key_file: Path
    """PEM private key of that certificate."""

    poll_seconds: float = DEFAULT_TLS_POLL_SECONDS
    """``--tls-poll-seconds``: how often both files are checked; a renewed pair is served from
    the next handshake on, without a restart."""


@dataclass(frozen=True)
class AuthSettings:
    token: str | None = None
    """Dispatch token expected as ``Authorization: Bearer <token>`` on ``/v1/*``.

    Read from ``--token-file`` (``CADENZA_SIDECAR_TOKEN_FILE``; surrounding whitespace stripped)
    or ``CADENZA_SIDECAR_TOKEN``. ``None`` only with ``insecure_no_auth`` (the check is off, which
    the sidecar logs as a warning at start) or with registration (the scheduler answers one).
    """

    insecure_no_auth: bool = False
    """``--insecure-no-auth`` (``CADENZA_SIDECAR_INSECURE_NO_AUTH=true``): allow starting without
    a token. For development only: any caller that reaches the port can run handlers."""

    token_file: Path | None = None
    """``--token-file``: watched while the sidecar runs; when its content changes (the kubelet
    updates a mounted Secret in place after a rotation) the new token is accepted at once."""

    grace_seconds: float = DEFAULT_TOKEN_GRACE_SECONDS
    """``--token-grace-seconds``: after the token file changed, the token it held before is still
    accepted this long, then refused."""

    poll_seconds: float = DEFAULT_TOKEN_POLL_SECONDS
    """``--token-poll-seconds``: how often the token file is checked (one ``stat``; the file is
    read only when that changes)."""


def auth_settings(resolve: flags.Resolver, environ: Mapping[str, str]) -> AuthSettings:
    """How dispatches are authenticated; whether a token is required is :func:`check_token`'s."""
    return AuthSettings(
        token=_token(resolve, environ),
        insecure_no_auth=resolve.get("insecure_no_auth", flags.boolean, False),
        token_file=resolve.get("token_file", Path, None),
        grace_seconds=resolve.get(
            "token_grace_seconds", flags.non_negative_float, DEFAULT_TOKEN_GRACE_SECONDS
        ),
        poll_seconds=resolve.get(
            "token_poll_seconds", flags.positive_float, DEFAULT_TOKEN_POLL_SECONDS
        ),
    )


def _token(resolve: flags.Resolver, environ: Mapping[str, str]) -> str | None:
    token_file = resolve.get("token_file", Path, None)
    if token_file is None:
        return environ.get(ENV_PREFIX + "TOKEN") or None
    try:
        return dispatch_tokens.read_token_file(token_file)
    except ValueError as exc:
        raise SettingsError(
            f"--token-file {token_file}: {exc}; put the dispatch token in it"
        ) from None


def check_token(auth: AuthSettings, *, registers: bool) -> None:
    """Refuses to start open to any caller unless ``--insecure-no-auth`` asks for it; a sidecar
    that registers gets its token from the scheduler instead."""
    if auth.token is None and not auth.insecure_no_auth and not registers:
        raise SettingsError(
            f"no dispatch token: give --token-file PATH (or {ENV_PREFIX}TOKEN_FILE, or the token"
            f" in {ENV_PREFIX}TOKEN), or --insecure-no-auth to let any caller run handlers"
            " (development only)"
        )


def server_tls(resolve: flags.Resolver) -> ServerTls | None:
    """The serving pair, loaded once so a file that cannot serve stops the start, not a
    handshake; None for plain HTTP."""
    cert = resolve.get("tls_cert_file", Path, None)
    key = resolve.get("tls_key_file", Path, None)
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        names = ("tls-cert-file", "tls-key-file")
        given, missing = names if key is None else names[::-1]
        raise SettingsError(
            f"--{given} needs --{missing} (or {ENV_PREFIX}{missing.upper().replace('-', '_')}):"
            " give both, the certificate and its private key, or neither for plain HTTP"
        )
    for flag, path in (("--tls-cert-file", cert), ("--tls-key-file", key)):
        try:
            path.read_bytes()
        except OSError as exc:
            raise SettingsError(f"{flag} {path}: cannot read it ({exc.strerror})") from None
    try:
        tls.server_context(cert, key)
    except ValueError as exc:
        raise SettingsError(f"--tls-cert-file {cert} and --tls-key-file {key}: {exc}") from None
    poll = resolve.get("tls_poll_seconds", flags.positive_float, DEFAULT_TLS_POLL_SECONDS)
    return ServerTls(cert, key, poll)


def callback_ca_file(resolve: flags.Resolver) -> Path | None:
    """``--callback-ca-file``, loaded once so a bundle that cannot verify stops the start."""
    ca_file = resolve.get("callback_ca_file", Path, None)
    if ca_file is not None:
        try:
            tls.client_context(ca_file)
        except ValueError as exc:
            raise SettingsError(f"--callback-ca-file {ca_file}: {exc}") from None
    return ca_file


def check_handler_user(user: HandlerUser, token_file: Path | None) -> None:
    """Refuses a handler user the sidecar cannot switch to, or one that could read the token."""
    flag = f"--handler-user {user.name} (or {ENV_PREFIX}HANDLER_USER)"
    why = handler_user.cannot_switch_reason(user)
    if why is not None:
        raise SettingsError(f"{flag} {why}")
    if token_file is not None and handler_user.readable_by(token_file, user):
        raise SettingsError(
            f"{flag}: that user could read --token-file {token_file}; make it readable by the"
            " sidecar only (mount the Secret with defaultMode: 0400, or chmod 600 the file)"
        )


def secret_file(
    resolve: flags.Resolver, environ: Mapping[str, str], flag: str, env_name: str
) -> str | None:
    """A secret from the file ``flag`` names (stripped), else from ``CADENZA_SIDECAR_<env_name>``;
    None when neither gives one."""
    path = resolve.get(flag, Path, None)
    if path is None:
        return environ.get(ENV_PREFIX + env_name) or None
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        option = "--" + flag.replace("_", "-")
        raise SettingsError(f"{option} {path}: cannot read it ({exc.strerror})") from None
    return value or None

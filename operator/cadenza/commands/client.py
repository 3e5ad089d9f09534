"""HTTP to the REST API with ``urllib``, and every way it can fail mapped to one exit code.

Invariant: :meth:`Client.call` returns the parsed JSON of a 2xx answer or raises
:class:`~cadenza.commands.errors.CommandError` with a one-line message; no ``urllib``, socket or
TLS exception leaves this module.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from cadenza.commands import errors
from cadenza.commands.discovery import Target
from cadenza.commands.errors import CommandError

USER_AGENT = "cadenza-cli/1"
Query = Sequence[tuple[str, str]]


class Client:
    def __init__(self, target: Target, timeout: float = 60.0) -> None:
        self.target, self.timeout = target, timeout
        self._tls = _tls_context(target) if target.url.startswith("https:") else None

    def get(self, path: str, query: Query = ()) -> Any:
        return self.call("GET", path, query=query)

    def call(
        self,
        method: str,
        path: str,
        *,
        query: Query = (),
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> Any:
        """The answer's JSON (None for an empty answer). ``fields`` maps the API's field names
        to the flags that set them, for the error message."""
        url = self.target.url + path
        if query:
            url += "?" + urllib.parse.urlencode(list(query))
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", "application/json")
        request.add_header("User-Agent", USER_AGENT)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.target.token:
            request.add_header("Authorization", f"Bearer {self.target.token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._tls) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            raise refusal(exc.code, _read(exc), self.target, fields or {}) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise CommandError(errors.UNAVAILABLE, unreachable(self.target.url, exc)) from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise CommandError(
                errors.UNAVAILABLE,
                f"{self.target.url} answered {status} with something that is not JSON;"
                " is it the Cadenza API?",
            ) from None


def _tls_context(target: Target) -> ssl.SSLContext:
    if target.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        return ssl.create_default_context(cafile=str(target.ca_file) if target.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise errors.usage(f"cannot use the CA file {target.ca_file}: {exc}") from None


def _read(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read()
    except (OSError, http.client.HTTPException):
        return b""


_VERB = re.compile(r'may not "([^"]+)"')


def refusal(status: int, raw: bytes, target: Target, fields: Mapping[str, str]) -> CommandError:
    """The error of a non-2xx answer: its ``error`` and ``field``, and the exit code."""
    message, field = _problem(raw)
    if status == 401:
        if not target.token:
            return CommandError(errors.FORBIDDEN, f"the API wants a token: {target.hint}")
        return CommandError(
            errors.FORBIDDEN,
            f"not authenticated: {message or 'the token was refused'} (HTTP 401); {target.hint}",
        )
    if status == 403:
        verb = _VERB.search(message or "")
        grant = f"; your Role needs the verb {verb.group(1)!r}" if verb else ""
        return CommandError(errors.FORBIDDEN, f"forbidden: {message or 'not allowed'}{grant}")
    text = message or http.client.responses.get(status, "error")
    if field:
        flag = fields.get(field) or fields.get(field.split(".")[0])
        flag = f" ({flag})" if flag else ""
        text = f"{field}{flag}: {text}"
    if status == 404:
        return CommandError(errors.NOT_FOUND, f"{text} (HTTP 404)")
    if status >= 500:
        return CommandError(errors.UNAVAILABLE, f"the API failed: {text} (HTTP {status})")
    return CommandError(errors.REFUSED, f"{text} (HTTP {status})")


def _problem(raw: bytes) -> tuple[str, str | None]:
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        return "", None
    if not isinstance(body, Mapping):
        return "", None
    message, field = body.get("error"), body.get("field")
    return (str(message) if message else "", str(field) if field else None)


def unreachable(url: str, exc: BaseException) -> str:
    reason: Any = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ssl.SSLCertVerificationError):
        return (
            f"cannot verify the TLS certificate of {url}: {reason.verify_message};"
            " pass --ca-file (or --insecure-skip-tls-verify)"
        )
    if isinstance(reason, TimeoutError | socket.timeout):
        return f"the Cadenza API at {url} did not answer in time"
    detail = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    return f"cannot reach the Cadenza API at {url}: {detail} (check --api or CADENZA_API)"

"""The leader's HTTP client for executor sidecars: ``POST``/``DELETE /v1/executions`` and probes.

Every answer of the sidecar maps to one :class:`Outcome` (:mod:`cadenza.dispatch.answers` says
what each means); nothing here raises for a pod that misbehaves, so the dispatcher decides with
a plain ``match`` what to do next. ``send_batch`` (protocol version 2, ``POST
/v1/executions:batch``) gives one result per request, each the result ``send`` would have
given, and falls back to ``send`` for a sidecar without batches.

Invariants:
- One ``aiohttp.ClientSession`` per client, created lazily inside the running loop and shared by
  dispatches, cancels and probes, so keep-alive connections to a pod are reused. Our keep-alive
  (15 s) is shorter than the sidecar's (aiohttp's 75 s), so we never send on a connection the
  pod is closing.
- Requests never follow redirects and every one has a deadline (connect and total).
- An ``https`` base URL is verified against the client's ``ssl_context`` (the leader's: the
  CAs of ``CADENZA_DISPATCH_CA_FILE``), host name included; a certificate that fails counts as
  unreachable before a byte of the request was sent, so the run goes to another pod.
- A request the sidecar refuses with 401 is sent once more with the previous dispatch token
  when there is one (:mod:`cadenza.dispatch.credentials`: a rotation its kubelet has not
  delivered yet), never more often and never with any other token.
- Every answer is read up to its kind's cap (``*_ANSWER_MAX_BYTES``) and never further: a pod
  answering more (an endless body, a huge Content-Length) costs us at most the cap, and that
  answer is that pod's error (:func:`answers.too_large_result`); its connection is closed.
- A batch answer that cannot be matched to its requests one for one counts, for every request in
  it, as a lost answer (``UNREACHABLE`` with ``may_have_started``): the pod may have started any.
- WARNING: an ``UNREACHABLE`` result with ``may_have_started`` set (the request was sent but the
  answer is missing: read timeout, reset, 5xx) does NOT prove the pod ignored the run. The
  idempotency key protects only within one pod, so re-send the same key to the same pod (or wait
  for the run's deadline) before giving the run to another pod.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import logging
import ssl
import urllib.parse
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp

from cadenza.dispatch import answers, credentials
from cadenza.dispatch.answers import (
    DispatchResult,
    Outcome,
    ProbeResult,
    answer_result,
    batch_results,
    classify,
    json_object,
    probe_result,
)
from cadenza.dispatch.credentials import DispatchToken

__all__ = [
    "DispatchClient",
    "DispatchRequest",
    "DispatchResult",
    "DispatchToken",
    "Outcome",
    "ProbeResult",
    "answer_result",
    "batch_results",
    "classify",
    "describe",
    "probe_result",
    "rfc3339",
]

log = logging.getLogger(__name__)

EXECUTIONS_PATH = "/v1/executions"
BATCH_PATH = "/v1/executions:batch"
# The sidecar refuses the batch as such (no batch route, or too large a batch): send one by one.
_ONE_BY_ONE_STATUSES = frozenset({400, 404, 405, 413})

RUN_ANSWER_MAX_BYTES = 2 * 1024 * 1024
"""Largest answer to a dispatch, a cancel or a view: one run's view, whose result the operator
takes up to 1 MiB (the callback route's body limit), or an error."""
BATCH_ANSWER_MAX_BYTES = 32 * 1024 * 1024
"""Largest answer to a batch dispatch: up to 200 runs (the dispatcher's batch), each answered as
``send`` would be, as the callback batch route takes 200 results in at most 32 MiB."""
PROBE_ANSWER_MAX_BYTES = 64 * 1024
"""Largest health answer: the sidecar's is a few dozen bytes; an outside executor's health URL
gets room for a small page."""
_CHUNK = 65536

Token = DispatchToken | str | None
"""What the dispatch methods take: a plain str is one token, with no fallback."""


class AnswerTooLarge(Exception):
    """The answer's body is larger than the cap its kind allows."""

    def __init__(self, status: int, limit: int) -> None:
        super().__init__(answers.too_large_error(status, limit))
        self.status, self.limit = status, limit


@dataclasses.dataclass(frozen=True)
class DispatchRequest:
    """One run for a sidecar; serialised exactly as ``docs/protocol.md`` says."""

    execution_key: str
    task_uid: str
    task: str
    """``namespace/name``."""
    epoch: int
    handler: str
    payload: Any
    scheduled_at: datetime
    """The tick (timezone-aware); sent as RFC 3339 UTC with milliseconds."""
    attempt: int
    timeout_seconds: int
    callback_url: str
    callback_token: str
    callback_batch_url: str | None = None
    """Where the sidecar may post this run's report together with others (protocol version 2);
    None: the report comes alone to ``callback_url``."""
    deadline: datetime | None = None
    """When the leader stops waiting for this attempt (timezone-aware): a sidecar does not start
    it later, and stops it by then, so a retry after the deadline never overlaps it."""
    start_at: datetime | None = None
    """When the sidecar is to start the handler (protocol version 3): set only for a pod whose
    sidecar says it honours it, when the run is sent ahead of its tick."""

    def __post_init__(self) -> None:
        for name in ("scheduled_at", "deadline", "start_at"):
            moment = getattr(self, name)
            if moment is not None and (moment.tzinfo is None or moment.utcoffset() is None):
                raise ValueError(f"{name} {moment!r} must be timezone-aware (UTC)")

    def to_json(self) -> dict[str, Any]:
        body = {
            "executionId": self.execution_key,
            "taskUid": self.task_uid,
            "task": self.task,
            "epoch": self.epoch,
            "handler": self.handler,
            "payload": self.payload,
            "scheduledAt": rfc3339(self.scheduled_at),
            "attempt": self.attempt,
            "timeoutSeconds": self.timeout_seconds,
            "callbackUrl": self.callback_url,
            "callbackToken": self.callback_token,
        }
        if self.callback_batch_url is not None:
            body["callbackBatchUrl"] = self.callback_batch_url
        if self.deadline is not None:
            body["deadline"] = rfc3339(self.deadline)
        if self.start_at is not None:
            body["startAt"] = rfc3339(self.start_at)
        return body


@functools.lru_cache(maxsize=1024)
def rfc3339(moment: datetime) -> str:
    """``2024-05-01T12:00:00.123Z``: UTC, milliseconds, as the sidecar writes its own times.
    Remembered: a tick's runs share their tick and, mostly, their deadline."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


class DispatchClient:
    def __init__(
        self,
        *,
        connect_timeout: float = 2.0,
        total_timeout: float = 5.0,
        cancel_timeout: float = 15.0,
        max_connections: int = 512,
        max_connections_per_pod: int = 32,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``cancel_timeout`` is longer than the others: the sidecar answers a cancel only once
        the handler stopped (its kill grace plus up to 5 s). ``ssl_context`` verifies sidecars
        served over HTTPS; None: aiohttp's default, the system's CAs (verification stays on)."""
        self._connect_timeout = connect_timeout
        self._total_timeout = total_timeout
        self._cancel_timeout = cancel_timeout
        self._limits = (max_connections, max_connections_per_pod)
        self._ssl: ssl.SSLContext | bool = True if ssl_context is None else ssl_context
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limits[0],
                limit_per_host=self._limits[1],
                keepalive_timeout=15,
                ssl=self._ssl,
            )
            self._session = aiohttp.ClientSession(connector=connector, raise_for_status=False)
        return self._session

    def _timeout(self, total: float) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=total, connect=min(self._connect_timeout, total))

    async def send(self, base_url: str, token: Token, request: DispatchRequest) -> DispatchResult:
        """POST the run to the sidecar at ``base_url`` (``http://10.0.0.7:9090``)."""
        data = json.dumps(request.to_json(), allow_nan=False, separators=(",", ":")).encode()
        try:
            status, raw = await self._exchange(
                "POST", base_url.rstrip("/") + EXECUTIONS_PATH, token, RUN_ANSWER_MAX_BYTES, data
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return self._unreachable(exc)
        except AnswerTooLarge as exc:
            return answers.too_large_result(exc.status, exc.limit)
        return answer_result(classify(status), status, json_object(raw), raw)

    async def send_batch(
        self, base_url: str, token: Token, requests: Sequence[DispatchRequest]
    ) -> list[DispatchResult]:
        """POST the runs to the sidecar in one request; one result per request, in order.

        The sidecar decides item by item, in order (a batch fills the pod's capacity as the
        same requests sent one after another would). A sidecar that does not take this batch
        is sent the requests one by one with ``send``, in the same order: 404 or 405 (a sidecar
        without batches), 413 or 400 (a batch larger than its ``--max-batch-bytes`` or
        ``--max-batch-items``; each request alone may still fit).
        """
        if not requests:
            return []
        data = json.dumps(
            {"executions": [request.to_json() for request in requests]},
            allow_nan=False,
            separators=(",", ":"),
        ).encode()
        url = base_url.rstrip("/") + BATCH_PATH
        try:
            status, raw = await self._exchange("POST", url, token, BATCH_ANSWER_MAX_BYTES, data)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return [self._unreachable(exc)] * len(requests)
        except AnswerTooLarge as exc:
            # The status alone decides a fallback: the body was never needed for it.
            if exc.status not in _ONE_BY_ONE_STATUSES:
                return [answers.too_large_result(exc.status, exc.limit)] * len(requests)
            status, raw = exc.status, b""
        if status in _ONE_BY_ONE_STATUSES:
            return [await self.send(base_url, token, request) for request in requests]
        return batch_results(status, json_object(raw), raw, len(requests))

    async def _exchange(
        self,
        method: str,
        url: str,
        token: Token,
        limit: int,
        data: bytes | None = None,
        total: float | None = None,
    ) -> tuple[int, bytes]:
        """One request (a JSON body when ``data``), again with the previous token after a 401;
        the answer's status and body (at most ``limit`` bytes). Raises what aiohttp raises, and
        AnswerTooLarge."""
        current, previous = credentials.tokens(token)
        status, raw = await self._once(method, url, current, limit, data, total)
        if status == 401 and previous:
            status, raw = await self._once(method, url, previous, limit, data, total)
        return status, raw

    async def _once(
        self,
        method: str,
        url: str,
        token: str | None,
        limit: int,
        data: bytes | None,
        total: float | None,
    ) -> tuple[int, bytes]:
        headers = _auth(token)
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self._http().request(
            method,
            url,
            data=None if data is None else io.BytesIO(data),  # aiohttp warns of raw > 1 MiB
            headers=headers,
            timeout=self._timeout(self._total_timeout if total is None else total),
            allow_redirects=False,
        ) as resp:
            return resp.status, await read_capped(resp, limit)

    def _unreachable(self, exc: BaseException) -> DispatchResult:
        return DispatchResult(
            Outcome.UNREACHABLE, None, None, describe(exc, self._total_timeout), None,
            may_have_started=_maybe_sent(exc),
        )  # fmt: skip

    async def cancel(self, base_url: str, token: Token, execution_key: str) -> bool:
        """Ask the pod to stop the run; True when it has stopped or had already finished."""
        url = _run_url(base_url, execution_key)
        try:
            status, raw = await self._exchange(
                "DELETE", url, token, RUN_ANSWER_MAX_BYTES, total=self._cancel_timeout
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("cancel of %s at %s failed: %s", execution_key, base_url,
                        describe(exc, self._cancel_timeout))  # fmt: skip
            return False
        except AnswerTooLarge as exc:
            log.warning("cancel of %s at %s: %s", execution_key, base_url, exc)
            return False
        if status in (200, 202):
            return True
        if status != 404:
            log.warning("cancel of %s at %s answered HTTP %s: %s", execution_key, base_url,
                        status, answers.message(json_object(raw), raw))  # fmt: skip
        return False

    async def view(self, base_url: str, token: Token, execution_key: str) -> dict[str, Any] | None:
        """What the pod knows of a run (``GET /v1/executions/{key}``): its view, ``{}`` when
        the pod does not know the key, None when the pod could not be asked."""
        url = _run_url(base_url, execution_key)
        try:
            status, raw = await self._exchange("GET", url, token, RUN_ANSWER_MAX_BYTES)
        except (aiohttp.ClientError, TimeoutError, AnswerTooLarge):
            return None
        if status == 404:
            return {}
        body = json_object(raw)
        return body if status == 200 and body is not None else None

    async def probe(self, base_url: str, path: str, timeout: float) -> ProbeResult:  # noqa: ASYNC109
        """GET the sidecar's health endpoint (no token: ``/healthz`` never needs one).

        ``timeout`` is the Executor's ``healthCheck.timeoutSeconds``: a slow answer is itself the
        verdict (a failed probe), not an error for the caller to handle.
        """
        try:
            async with self._http().get(
                base_url.rstrip("/") + path,
                timeout=self._timeout(timeout),
                allow_redirects=False,
            ) as resp:
                status = resp.status
                raw = await read_capped(resp, PROBE_ANSWER_MAX_BYTES)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return ProbeResult(False, None, None, False, describe(exc, timeout))
        except AnswerTooLarge as exc:
            return ProbeResult(False, None, None, False, str(exc))
        return probe_result(status, json_object(raw), raw)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The answer's body if it has at most ``limit`` bytes; otherwise the connection is closed
    (the rest is never read) and AnswerTooLarge raised. Holds at most ``limit`` bytes plus one
    chunk, whatever the pod sends."""
    if resp.content_length is not None and resp.content_length > limit:
        resp.close()
        raise AnswerTooLarge(resp.status, limit)
    chunks: list[bytes] = []
    size = 0
    while chunk := await resp.content.read(min(_CHUNK, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            resp.close()
            raise AnswerTooLarge(resp.status, limit)
    return b"".join(chunks)


def describe(exc: BaseException, timeout: float) -> str:
    """A one-line account of a failed request, naming what happened."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "connect timed out"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate not trusted: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "connection closed before the answer"
    return f"{type(exc).__name__}: {exc}"


def _maybe_sent(exc: BaseException) -> bool:
    # Connection set-up failures happen before a byte of the request left us.
    return not isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)


def _run_url(base_url: str, execution_key: str) -> str:
    return f"{base_url.rstrip('/')}{EXECUTIONS_PATH}/{urllib.parse.quote(execution_key, safe='')}"


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}

"""The leader's HTTP client for executor sidecars: ``POST``/``DELETE /v1/executions`` and probes.

Every answer of the sidecar maps to one :class:`Outcome`; nothing here raises for a pod that
misbehaves, so the dispatcher decides with a plain ``match`` what to do next. ``send_batch``
(protocol version 2, ``POST /v1/executions:batch``) gives one result per request, each the
result ``send`` would have given, and falls back to ``send`` for a sidecar without batches.

Invariants:
- One ``aiohttp.ClientSession`` per client, created lazily inside the running loop and shared by
  dispatches, cancels and probes, so keep-alive connections to a pod are reused. Our keep-alive
  (15 s) is shorter than the sidecar's (aiohttp's 75 s), so we never send on a connection the
  pod is closing.
- Requests never follow redirects and every one has a deadline (connect and total).
- A batch answer that cannot be matched to its requests one for one counts, for every request in
  it, as a lost answer (``UNREACHABLE`` with ``may_have_started``): the pod may have started any.
- WARNING: an ``UNREACHABLE`` result with ``may_have_started`` set (the request was sent but the
  answer is missing: read timeout, reset, 5xx) does NOT prove the pod ignored the run. The
  idempotency key protects only within one pod, so re-send the same key to the same pod (or wait
  for the run's deadline) before giving the run to another pod.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import json
import logging
import urllib.parse
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

EXECUTIONS_PATH = "/v1/executions"
BATCH_PATH = "/v1/executions:batch"
# The sidecar refuses the batch as such (no batch route, or too large a batch): send one by one.
_ONE_BY_ONE_STATUSES = frozenset({400, 404, 405, 413})
_ERROR_BODY_CHARS = 300


class Outcome(enum.StrEnum):
    ACCEPTED = "accepted"
    """202: the pod started the run."""
    DUPLICATE = "duplicate"
    """200: the pod already has this execution key; as good as accepted."""
    BUSY = "busy"
    """429: the pod runs ``--max-concurrency`` runs."""
    DRAINING = "draining"
    """503: the pod is shutting down."""
    REJECTED = "rejected"
    """400/401/403/413 (or another unexpected answer): this pod will not take the request."""
    UNREACHABLE = "unreachable"
    """No usable answer: connection refused/reset, timeout, DNS, a 5xx other than 503."""


# What a batch item's "result" means; an item without a known one is judged by its status.
_BATCH_OUTCOMES = {
    "accepted": Outcome.ACCEPTED,
    "known": Outcome.DUPLICATE,
    "busy": Outcome.BUSY,
    "draining": Outcome.DRAINING,
    "refused": Outcome.REJECTED,
}


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

    def __post_init__(self) -> None:
        if self.scheduled_at.tzinfo is None or self.scheduled_at.utcoffset() is None:
            raise ValueError(f"scheduled_at {self.scheduled_at!r} must be timezone-aware (UTC)")

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
        return body


@dataclasses.dataclass(frozen=True)
class DispatchResult:
    outcome: Outcome
    status: int | None
    body: dict[str, Any] | None
    error: str | None
    pod: str | None
    """The pod name the sidecar reported, when it answered with one."""
    may_have_started: bool = False
    """The request left us but its answer did not arrive: the run may be running there."""

    @property
    def started(self) -> bool:
        """The pod has the run (new or duplicate)."""
        return self.outcome in (Outcome.ACCEPTED, Outcome.DUPLICATE)

    @property
    def try_another_pod(self) -> bool:
        """Another pod may take the run; False for a request every pod would refuse (400, 413)
        and for runs the pod already has."""
        if self.outcome in (Outcome.BUSY, Outcome.DRAINING, Outcome.UNREACHABLE):
            return True
        return self.outcome is Outcome.REJECTED and self.status not in (400, 413)


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    ok: bool
    in_flight: int | None
    capacity: int | None
    draining: bool
    error: str | None


def rfc3339(moment: datetime) -> str:
    """``2024-05-01T12:00:00.123Z``: UTC, milliseconds, as the sidecar writes its own times."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def classify(status: int) -> Outcome:
    """The outcome of a dispatch answered with HTTP ``status``."""
    if status == 202:
        return Outcome.ACCEPTED
    if status == 200:
        return Outcome.DUPLICATE
    if status == 429:
        return Outcome.BUSY
    if status == 503:
        return Outcome.DRAINING
    if status >= 500:
        return Outcome.UNREACHABLE
    return Outcome.REJECTED


class DispatchClient:
    def __init__(
        self,
        *,
        connect_timeout: float = 2.0,
        total_timeout: float = 5.0,
        cancel_timeout: float = 15.0,
        max_connections: int = 512,
        max_connections_per_pod: int = 32,
    ) -> None:
        """``cancel_timeout`` is longer than the others: the sidecar answers a cancel only once
        the handler stopped (its kill grace plus up to 5 s)."""
        self._connect_timeout = connect_timeout
        self._total_timeout = total_timeout
        self._cancel_timeout = cancel_timeout
        self._limits = (max_connections, max_connections_per_pod)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limits[0], limit_per_host=self._limits[1], keepalive_timeout=15
            )
            self._session = aiohttp.ClientSession(connector=connector, raise_for_status=False)
        return self._session

    def _timeout(self, total: float) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=total, connect=min(self._connect_timeout, total))

    async def send(
        self, base_url: str, token: str | None, request: DispatchRequest
    ) -> DispatchResult:
        """POST the run to the sidecar at ``base_url`` (``http://10.0.0.7:9090``)."""
        data = json.dumps(request.to_json(), allow_nan=False, separators=(",", ":")).encode()
        try:
            status, raw = await self._post(base_url.rstrip("/") + EXECUTIONS_PATH, token, data)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return self._unreachable(exc)
        return answer_result(classify(status), status, _json_object(raw), raw)

    async def send_batch(
        self, base_url: str, token: str | None, requests: Sequence[DispatchRequest]
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
        try:
            status, raw = await self._post(base_url.rstrip("/") + BATCH_PATH, token, data)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return [self._unreachable(exc)] * len(requests)
        if status in _ONE_BY_ONE_STATUSES:
            return [await self.send(base_url, token, request) for request in requests]
        return batch_results(status, _json_object(raw), raw, len(requests))

    async def _post(self, url: str, token: str | None, data: bytes) -> tuple[int, bytes]:
        """POST a JSON body; the answer's status and body. Raises what aiohttp raises."""
        async with self._http().post(
            url,
            data=io.BytesIO(data),  # aiohttp warns about raw bodies above 1 MiB
            headers={"Content-Type": "application/json", **_auth(token)},
            timeout=self._timeout(self._total_timeout),
            allow_redirects=False,
        ) as resp:
            return resp.status, await resp.read()

    def _unreachable(self, exc: BaseException) -> DispatchResult:
        return DispatchResult(
            Outcome.UNREACHABLE, None, None, describe(exc, self._total_timeout), None,
            may_have_started=_maybe_sent(exc),
        )  # fmt: skip

    async def cancel(self, base_url: str, token: str | None, execution_key: str) -> bool:
        """Ask the pod to stop the run; True when it has stopped or had already finished."""
        url = _run_url(base_url, execution_key)
        try:
            async with self._http().delete(
                url,
                headers=_auth(token),
                timeout=self._timeout(self._cancel_timeout),
                allow_redirects=False,
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("cancel of %s at %s failed: %s", execution_key, base_url,
                        describe(exc, self._cancel_timeout))  # fmt: skip
            return False
        if status in (200, 202):
            return True
        if status != 404:
            log.warning("cancel of %s at %s answered HTTP %s: %s", execution_key, base_url,
                        status, _message(_json_object(raw), raw))  # fmt: skip
        return False

    async def view(
        self, base_url: str, token: str | None, execution_key: str
    ) -> dict[str, Any] | None:
        """What the pod knows of a run (``GET /v1/executions/{key}``): its view, ``{}`` when
        the pod does not know the key, None when the pod could not be asked."""
        url = _run_url(base_url, execution_key)
        try:
            async with self._http().get(
                url,
                headers=_auth(token),
                timeout=self._timeout(self._total_timeout),
                allow_redirects=False,
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError):
            return None
        if status == 404:
            return {}
        body = _json_object(raw)
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
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return ProbeResult(False, None, None, False, describe(exc, timeout))
        return probe_result(status, _json_object(raw), raw)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def answer_result(
    outcome: Outcome, status: int, body: dict[str, Any] | None, raw: bytes
) -> DispatchResult:
    """The result of a dispatch answered ``status`` with ``body`` (``raw`` for the message)."""
    error = None
    if outcome not in (Outcome.ACCEPTED, Outcome.DUPLICATE):
        error = f"HTTP {status}: {_message(body, raw)}"
    pod = body.get("pod") if body else None
    return DispatchResult(
        outcome, status, body, error, pod if isinstance(pod, str) else None,
        may_have_started=outcome is Outcome.UNREACHABLE,
    )  # fmt: skip


def batch_results(
    status: int, body: dict[str, Any] | None, raw: bytes, count: int
) -> list[DispatchResult]:
    """The results of a batch of ``count`` requests answered ``status`` with ``body``.

    Not 200: the answer is about the batch as a whole (401, 429, 503, 5xx) and is every
    request's result. 200 without exactly ``count`` results: every request's
    answer is lost, and any of them may have started.
    """
    if status != 200:
        return [answer_result(classify(status), status, body, raw)] * count
    items = body.get("results") if body else None
    if not isinstance(items, list) or len(items) != count:
        lost = DispatchResult(
            Outcome.UNREACHABLE, status, body, "HTTP 200 whose results do not match the batch",
            None, may_have_started=True,
        )  # fmt: skip
        return [lost] * count
    return [batch_item_result(item) for item in items]


def batch_item_result(item: Any) -> DispatchResult:
    """One entry of a batch answer as the result ``send`` would have given for its request:
    accepted and known started the run, busy and draining send it elsewhere, refused is the 400
    every pod would give. A known run's view is the body, as for a duplicate ``send``."""
    if not isinstance(item, dict):
        return answer_result(Outcome.UNREACHABLE, 200, None, b"a batch result is not an object")
    status = item.get("status")
    status = status if isinstance(status, int) and not isinstance(status, bool) else 200
    kind = item.get("result")
    outcome = _BATCH_OUTCOMES.get(kind) if isinstance(kind, str) else None
    if outcome is None:
        outcome = classify(status) if status != 200 else Outcome.UNREACHABLE
    run = item.get("run")
    if outcome is Outcome.DUPLICATE and isinstance(run, dict):
        body = run
    else:
        body = {k: v for k, v in item.items() if k not in ("result", "status")}
    return answer_result(outcome, status, body, b"")


def probe_result(status: int, body: dict[str, Any] | None, raw: bytes) -> ProbeResult:
    """What a health answer means; only ``200 {"status": "ok"}`` is healthy."""
    in_flight = _count(body, "inFlight")
    capacity = _count(body, "capacity")
    if status == 200 and body is not None and body.get("status") == "ok":
        return ProbeResult(True, in_flight, capacity, False, None)
    if status == 503 and body is not None and body.get("draining") is True:
        return ProbeResult(False, in_flight, capacity, True, "draining (HTTP 503)")
    return ProbeResult(False, in_flight, capacity, False, f"HTTP {status}: {_message(body, raw)}")


def describe(exc: BaseException, timeout: float) -> str:
    """A one-line account of a failed request, naming what happened."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "connect timed out"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
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


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _message(body: dict[str, Any] | None, raw: bytes) -> str:
    if body is not None and isinstance(body.get("error"), str):
        return str(body["error"])
    text = raw.decode("utf-8", errors="replace").strip()
    return text[:_ERROR_BODY_CHARS] or "(empty body)"


def _count(body: dict[str, Any] | None, key: str) -> int | None:
    value = body.get(key) if body else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None

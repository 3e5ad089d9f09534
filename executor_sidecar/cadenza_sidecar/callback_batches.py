"""Batched callbacks: the reports that share a ``callbackBatchUrl`` travel together.

One lane per batch URL holds that URL's undelivered reports, oldest first, and has at most one
request in flight. The request is ``POST <callbackBatchUrl>`` with ``{"callbacks": [item, ...]}``,
each item being the single callback body plus the run's ``callbackUrl`` (which names the run to
the receiver) and its own ``token`` (each run has its own); the receiver answers
``200 {"results": [{"status": <the status the single callback would get>, ...}, ...]}`` in order.

Invariants:
- No linger timer: an idle lane posts whatever is due at once, up to ``batch_max_items``; reports
  that arrive while a batch is in flight form the next batch. Low load costs no latency.
- Each item is settled on its own, with the single callback's rules: 2xx acknowledged, 403, 404,
  409, 410 refused for good (both leave the spool and are never sent again); anything else is
  retried. A failure of the whole request (connection error, timeout, 5xx, 408, 429, a 200
  whose results do not match the items) retries every item of it.
- Items that failed together wait one shared delay (capped exponential backoff with jitter,
  ``Retry-After`` honoured), so they stay together as the next batch instead of trickling out.
- A receiver that refuses the batch as a whole with a 4xx other than 408 and 429 (404 or 405:
  an operator without batches; 413: too large for it; 400, 401, 403: it, or a proxy before it,
  does not take batches) gets those reports one by one: they leave the lane for single delivery,
  whose rules then apply to each. The next batch tries the batch URL again, so an operator
  upgraded meanwhile is used at once; the price is one refused request per batch while it is not.
- A report is in exactly one place, a lane or a single delivery, so it is never in two requests
  at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from cadenza_sidecar import delivery, protocol
from cadenza_sidecar.delivery import Verdict
from cadenza_sidecar.protocol import ExecutionId, JsonObject, JsonValue, Report
from cadenza_sidecar.settings import CallbackSettings

logger = logging.getLogger(__name__)

# Client errors that are about time, not about the request: a batch answered so is retried.
_TRY_AGAIN_STATUSES = frozenset({408, 429})

Settled = Callable[[list[Report]], Awaitable[None]]
SendAlone = Callable[[Report], None]


@dataclass(eq=False)
class _Pending:
    report: Report
    attempts: int = 0
    """Failed attempts so far; sets the pace of the next retry."""
    not_before: float = 0.0
    """Loop time before which the report is not sent again."""


@dataclass(frozen=True)
class _Answer:
    status: int | None
    """The batch request's HTTP status; None when no answer came."""
    items: list[int | None] | None
    """Per-item statuses (None for an unusable entry); None when the request failed as a whole."""
    detail: str
    retry_after: float | None = None


def refuses_batches(status: int) -> bool:
    """Whether a batch answered ``status`` as a whole should travel as single callbacks."""
    return 400 <= status < 500 and status not in _TRY_AGAIN_STATUSES


def batch_item(report: Report) -> JsonObject:
    """One report as an item of a batched callback."""
    return {
        "callbackUrl": report.callback_url,
        "token": report.callback_token,
        **report.callback_body(),
    }


def item_statuses(raw: bytes, count: int) -> list[int | None] | None:
    """The per-item statuses of a batch answer, None unless it has exactly ``count`` results."""
    try:
        body = protocol.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list) or len(results) != count:
        return None
    return [_status(result) for result in results]


def _status(result: Any) -> int | None:
    status = result.get("status") if isinstance(result, dict) else None
    return status if isinstance(status, int) and not isinstance(status, bool) else None


class BatchLane:
    """The undelivered reports of one ``callbackBatchUrl`` and the task that sends them."""

    def __init__(
        self,
        url: str,
        settings: CallbackSettings,
        session: aiohttp.ClientSession,
        *,
        settled: Settled,
        send_alone: SendAlone,
    ) -> None:
        self._url = url
        self._settings = settings
        self._session = session
        self._settled = settled
        self._send_alone = send_alone
        # Insertion order is arrival order: the oldest reports go first.
        self._pending: dict[ExecutionId, _Pending] = {}
        self._wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    def add(self, report: Report) -> None:
        self._pending[report.execution_id] = _Pending(report)
        self._wake.set()
        if not self.busy:
            # The task ends as soon as the lane is empty; this is the only place that starts it.
            self.task = asyncio.create_task(self._run(), name=f"callback-batch:{self._url}")

    async def _run(self) -> None:
        while batch := await self._next_batch():
            await self._send(batch)

    async def _next_batch(self) -> list[_Pending]:
        """The due reports, oldest first; waits for one to become due. Empty: the lane is."""
        loop = asyncio.get_running_loop()
        while self._pending:
            now = loop.time()
            due = [p for p in self._pending.values() if p.not_before <= now]
            if due:
                return due[: self._settings.batch_max_items]
            self._wake.clear()
            earliest = min(p.not_before for p in self._pending.values())
            # asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancellation that comes
            # as the event is set (python/cpython#86296), and the lane would not stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(earliest - now):
                    await self._wake.wait()
        return []

    async def _send(self, batch: list[_Pending]) -> None:
        answer = await self._post(batch)
        if answer.status is not None and refuses_batches(answer.status):
            logger.warning(
                "batch callback refused as a whole; sending these reports one by one",
                extra={"url": self._url, "detail": answer.detail, "items": len(batch)},
            )
            for pending in batch:
                del self._pending[pending.report.execution_id]
                self._send_alone(pending.report)
            return
        if answer.items is None:
            self._retry(batch, answer.detail, answer.retry_after)
            return
        final: list[_Pending] = []
        failed: list[_Pending] = []
        failed_statuses: set[str] = set()
        for pending, status in zip(batch, answer.items, strict=True):
            verdict = delivery.verdict(status)
            if verdict is Verdict.RETRY:
                failed.append(pending)
                failed_statuses.add(str(status))
                continue
            if verdict is Verdict.REFUSED:
                logger.warning(
                    "callback refused for good; dropping the result",
                    extra={
                        "executionId": pending.report.execution_id,
                        "attempts": pending.attempts + 1,
                        "detail": f"HTTP {status} (batched)",
                    },
                )
            final.append(pending)
        logger.info(
            "callback batch answered",
            extra={"url": self._url, "items": len(batch), "settled": len(final)},
        )
        if failed:
            self._retry(failed, f"item status {', '.join(sorted(failed_statuses))}", None)
        for pending in final:
            del self._pending[pending.report.execution_id]
        if final:
            await self._settled([pending.report for pending in final])

    def _retry(self, group: list[_Pending], detail: str, retry_after: float | None) -> None:
        for pending in group:
            pending.attempts += 1
        delay = delivery.backoff_delay(max(p.attempts for p in group), self._settings, retry_after)
        not_before = asyncio.get_running_loop().time() + delay
        for pending in group:
            pending.not_before = not_before
        logger.warning(
            "callback batch failed; will retry",
            extra={
                "url": self._url,
                "items": len(group),
                "detail": detail,
                "retryIn": round(delay, 3),
                "executionIds": [p.report.execution_id for p in group[:10]],
            },
        )

    async def _post(self, batch: list[_Pending]) -> _Answer:
        items: list[JsonValue] = [batch_item(pending.report) for pending in batch]
        try:
            async with self._session.post(
                self._url,
                # A file-like body: aiohttp warns about (and blocks on) raw bytes above 1 MiB.
                data=io.BytesIO(protocol.dumps({"callbacks": items}).encode()),
                headers={"Content-Type": "application/json"},
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self._settings.request_timeout_seconds),
            ) as response:
                status = response.status
                retry_after = delivery.retry_after(response)
                raw = await response.read()
        except (aiohttp.ClientError, OSError) as exc:  # OSError covers TimeoutError
            return _Answer(None, None, f"{type(exc).__name__}: {exc}")
        if status != 200:
            return _Answer(status, None, f"HTTP {status}", retry_after)
        statuses = item_statuses(raw, len(batch))
        if statuses is None:
            return _Answer(status, None, "HTTP 200 whose results do not match the batch's items")
        return _Answer(status, statuses, "HTTP 200")

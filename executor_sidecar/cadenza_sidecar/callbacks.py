"""Callbacks: deliver each finished run's report to the operator, durably and at least once.

Invariants:
- ``accept`` spools the report (fsynced) before the first delivery attempt; the spool file is
  removed only when the receiver acknowledged it (2xx) or refused it for good (403, 404, 409,
  410). So every result is either acknowledged, refused, or still in the spool.
- Everything else (5xx, 429, other statuses, connection errors, timeouts) is retried with capped
  exponential backoff and jitter, honouring ``Retry-After``, forever while the process lives.
- At most one delivery per execution is in flight; redirects are not followed (a POST must not
  silently become a GET).
- ``flush`` waits for pending deliveries up to a deadline, then abandons them: their reports stay
  in the spool and the next start re-sends them.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random

import aiohttp

from cadenza_sidecar import protocol
from cadenza_sidecar.protocol import PERMANENT_REFUSAL_STATUSES, ExecutionId, Report
from cadenza_sidecar.settings import CallbackSettings
from cadenza_sidecar.spool import Spool

logger = logging.getLogger(__name__)


class Verdict(enum.Enum):
    ACKNOWLEDGED = "acknowledged"
    REFUSED = "refused"
    RETRY = "retry"


def backoff_delay(
    attempt: int, settings: CallbackSettings, retry_after: float | None = None
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    Half-jitter: a uniform pick in the upper half of the exponential step, so retries of many
    results spread out yet never come sooner than half the nominal delay.
    """
    step = min(
        settings.backoff_max_seconds,
        settings.backoff_initial_seconds * 2 ** min(attempt - 1, 32),
    )
    delay = random.uniform(step / 2, step)
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.backoff_max_seconds))
    return delay


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    raw = response.headers.get("Retry-After", "")
    try:
        seconds = float(raw)
    except ValueError:
        return None  # absent, or an HTTP date: the ordinary backoff is good enough
    return seconds if seconds >= 0 else None


class CallbackSender:
    """Owns every pending delivery and the spool files behind them."""

    def __init__(
        self,
        settings: CallbackSettings,
        session: aiohttp.ClientSession,
        spool: Spool,
    ) -> None:
        self._settings = settings
        self._session = session
        self._spool = spool
        self._deliveries: dict[ExecutionId, asyncio.Task[None]] = {}
        self._reports: dict[ExecutionId, Report] = {}

    @property
    def pending(self) -> int:
        return len(self._deliveries)

    def undelivered(self, execution_id: ExecutionId) -> Report | None:
        """The report of a delivery still in progress, if any."""
        return self._reports.get(execution_id)

    async def accept(self, report: Report) -> None:
        """Makes the report durable, then starts delivering it.

        If the spool cannot be written (full or read-only disk) the callback is still sent; the
        result is then only as durable as this process, which is logged as an error.
        """
        try:
            await self._spool.save(report)
        except OSError:
            logger.exception(
                "could not spool a result; delivering it without durability",
                extra={"executionId": report.execution_id, "spool": str(self._spool.directory)},
            )
        self._start(report)

    def resume(self, reports: list[Report]) -> None:
        """Re-sends results a previous process left in the spool."""
        for report in reports:
            logger.info(
                "re-sending spooled result",
                extra={"executionId": report.execution_id, "status": report.status.value},
            )
            self._start(report)

    def _start(self, report: Report) -> None:
        if report.execution_id in self._deliveries:
            return
        execution_id = report.execution_id
        task = asyncio.create_task(self._deliver(report), name=f"callback:{execution_id}")
        self._deliveries[execution_id] = task
        self._reports[execution_id] = report

        def forget(_: asyncio.Task[None]) -> None:
            self._deliveries.pop(execution_id, None)
            self._reports.pop(execution_id, None)

        task.add_done_callback(forget)

    async def _deliver(self, report: Report) -> None:
        context = {"executionId": report.execution_id, "status": report.status.value}
        attempt = 0
        while True:
            attempt += 1
            verdict, detail, retry_after = await self._post(report)
            if verdict is Verdict.ACKNOWLEDGED:
                logger.info("callback acknowledged", extra={**context, "attempts": attempt})
                break
            if verdict is Verdict.REFUSED:
                logger.warning(
                    "callback refused for good; dropping the result",
                    extra={**context, "attempts": attempt, "detail": detail},
                )
                break
            delay = backoff_delay(attempt, self._settings, retry_after)
            logger.warning(
                "callback failed; will retry",
                extra={**context, "attempt": attempt, "detail": detail, "retryIn": round(delay, 3)},
            )
            await asyncio.sleep(delay)
        try:
            await self._spool.remove(report.execution_id)
        except OSError:
            logger.exception("could not remove a settled result from the spool", extra=context)

    async def _post(self, report: Report) -> tuple[Verdict, str, float | None]:
        try:
            async with self._session.post(
                report.callback_url,
                data=protocol.dumps(report.callback_body()).encode(),
                headers={
                    "Authorization": f"Bearer {report.callback_token}",
                    "Content-Type": "application/json",
                },
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self._settings.request_timeout_seconds),
            ) as response:
                status = response.status
                retry_after = _retry_after(response)
        except (aiohttp.ClientError, OSError) as exc:  # OSError covers TimeoutError
            return Verdict.RETRY, f"{type(exc).__name__}: {exc}", None
        if 200 <= status < 300:
            return Verdict.ACKNOWLEDGED, f"HTTP {status}", None
        if status in PERMANENT_REFUSAL_STATUSES:
            return Verdict.REFUSED, f"HTTP {status}", None
        return Verdict.RETRY, f"HTTP {status}", retry_after

    async def flush(self, deadline_seconds: float) -> int:
        """Waits up to ``deadline_seconds`` for pending deliveries; returns how many are left."""
        tasks = list(self._deliveries.values())
        if not tasks:
            return 0
        _, unfinished = await asyncio.wait(tasks, timeout=deadline_seconds)
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.wait(unfinished)
            logger.warning(
                "callbacks still pending; their results stay in the spool for the next start",
                extra={"count": len(unfinished), "spool": str(self._spool.directory)},
            )
        return len(unfinished)

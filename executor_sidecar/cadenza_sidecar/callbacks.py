"""Callbacks: deliver each finished run's report to the operator, durably and at least once.

A report travels alone (``POST callbackUrl`` with the run's token as Bearer) unless its run was
dispatched with a ``callbackBatchUrl``: then it goes with the other reports for that URL
(``callback_batches``), and alone again only if that URL turns batches away.

Invariants:
- ``accept`` spools the report (fsynced) before the first delivery attempt; the spool file is
  removed only when the receiver acknowledged it (2xx) or refused it for good (403, 404, 409,
  410). So every result is either acknowledged, refused, or still in the spool; or, when the
  spool could not be written (full disk), still in this process's memory, being delivered.
- Everything else (5xx, 429, other statuses, connection errors, timeouts) is retried with capped
  exponential backoff and jitter, honouring ``Retry-After``, forever while the process lives
  (the rules are in ``delivery``).
- At most one delivery per execution is in flight, single or batched; redirects are not followed
  (a POST must not silently become a GET).
- ``flush`` waits for pending deliveries up to a deadline, then abandons them: their reports stay
  in the spool and the next start re-sends them.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from cadenza_sidecar import delivery, protocol
from cadenza_sidecar.callback_batches import BatchLane
from cadenza_sidecar.delivery import Verdict
from cadenza_sidecar.protocol import ExecutionId, Report
from cadenza_sidecar.settings import CallbackSettings
from cadenza_sidecar.spool import Spool

logger = logging.getLogger(__name__)


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
        self._singles: dict[ExecutionId, asyncio.Task[None]] = {}
        # One per batch URL ever seen; in practice the operator's one Service URL.
        self._lanes: dict[str, BatchLane] = {}
        # Every report not yet settled, whichever way it travels.
        self._reports: dict[ExecutionId, Report] = {}
        # Those of them the spool could not take: lost if this process ends before they settle.
        self._unspooled: set[ExecutionId] = set()

    @property
    def pending(self) -> int:
        return len(self._reports)

    def undelivered(self, execution_id: ExecutionId) -> Report | None:
        """The report of a delivery still in progress, if any."""
        return self._reports.get(execution_id)

    async def accept(self, report: Report) -> Report:
        """Makes the report durable, then starts delivering it; returns it as spooled and sent
        (trimmed to its run's room in the spool, if it had to be).

        If the spool cannot be written (full disk, I/O error) the callback is still sent, from
        memory, with the same retries; the result is then only as durable as this process, which
        is logged as an error (and again if the process ends before the callback settled).
        """
        report = self._spool.fit(report)
        try:
            await self._spool.save(report)
        except OSError as exc:
            self._unspooled.add(report.execution_id)
            logger.error(
                "could not spool a result; delivering it from memory, so it is lost if the"
                " sidecar stops before the callback is acknowledged",
                extra={
                    "executionId": report.execution_id,
                    "spool": str(self._spool.directory),
                    "reason": repr(exc),
                },
            )
        self._start(report)
        return report

    def resume(self, reports: list[Report]) -> None:
        """Re-sends results a previous process left in the spool."""
        for report in reports:
            logger.info(
                "re-sending spooled result",
                extra={"executionId": report.execution_id, "status": report.status.value},
            )
            self._start(report)

    def _start(self, report: Report) -> None:
        if report.execution_id in self._reports:
            return
        self._reports[report.execution_id] = report
        if report.callback_batch_url is None:
            self._start_single(report)
        else:
            self._lane(report.callback_batch_url).add(report)

    def _lane(self, url: str) -> BatchLane:
        lane = self._lanes.get(url)
        if lane is None:
            lane = BatchLane(
                url,
                self._settings,
                self._session,
                settled=self._settled,
                send_alone=self._start_single,
            )
            self._lanes[url] = lane
        return lane

    def _start_single(self, report: Report) -> None:
        execution_id = report.execution_id
        task = asyncio.create_task(self._deliver(report), name=f"callback:{execution_id}")
        self._singles[execution_id] = task

        def forget(_: asyncio.Task[None]) -> None:
            self._singles.pop(execution_id, None)
            self._reports.pop(execution_id, None)
            self._unspooled.discard(execution_id)

        task.add_done_callback(forget)

    async def _settled(self, reports: list[Report]) -> None:
        """Removes the spool files of batched reports that are acknowledged or refused."""
        try:
            await self._spool.remove_many([report.execution_id for report in reports])
        except OSError:
            logger.exception(
                "could not remove settled results from the spool",
                extra={"executionIds": [report.execution_id for report in reports]},
            )
        finally:
            for report in reports:
                self._reports.pop(report.execution_id, None)
                self._unspooled.discard(report.execution_id)

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
            delay = delivery.backoff_delay(attempt, self._settings, retry_after)
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
                retry_after = delivery.retry_after(response)
        except (aiohttp.ClientError, OSError) as exc:  # OSError covers TimeoutError
            return Verdict.RETRY, f"{type(exc).__name__}: {exc}", None
        verdict = delivery.verdict(status)
        return verdict, f"HTTP {status}", retry_after if verdict is Verdict.RETRY else None

    def _tasks(self) -> list[asyncio.Task[None]]:
        tasks = [*self._singles.values(), *(lane.task for lane in self._lanes.values())]
        return [task for task in tasks if task is not None and not task.done()]

    async def flush(self, deadline_seconds: float) -> int:
        """Waits up to ``deadline_seconds`` for pending deliveries; returns how many reports are
        left undelivered (they stay in the spool)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_seconds
        # In a loop: a batch refused as a whole hands its reports to new single deliveries.
        while tasks := self._tasks():
            _, unfinished = await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()))
            if not unfinished:
                continue
            left = len(self._reports)
            for task in unfinished:
                task.cancel()
            await asyncio.wait(unfinished)
            logger.warning(
                "callbacks still pending; their results stay in the spool for the next start",
                extra={"count": left, "spool": str(self._spool.directory)},
            )
            if lost := sorted(self._unspooled & self._reports.keys()):
                logger.error(
                    "results that could not be spooled are lost with this process",
                    extra={"count": len(lost), "executionIds": lost[:10]},
                )
            return left
        return 0

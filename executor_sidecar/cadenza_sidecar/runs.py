"""The run registry: admission (idempotency, concurrency, draining), timeouts and cancellation.

Invariants:
- One executionId maps to at most one run while the run is in flight, for the retention window
  after it finished, and for as long as its callback is undelivered (across restarts too, via
  the spool): a known id is answered with the existing run, never started again. The check and
  the insert happen with no ``await`` between them, so concurrent duplicates cannot race.
- A run counts against ``max_concurrency`` from admission until its result has been settled,
  and takes its room in the spool (``reserve``) at admission too, so its result always fits.
- A run reads as finished only after its report was handed to ``settle`` (which spools it), so
  anyone who saw a final state may kill -9 the sidecar without losing the result.
- A run ends exactly once, in the first of: the handler returns, the timeout fires (TIMED_OUT:
  ``timeoutSeconds`` after it started, or the dispatch's ``deadline`` if that comes first), a
  cancel is requested (CANCELLED). Cancelling the handler waits until it has stopped.
- A run sent with ``startAt`` (protocol version 3) is admitted at once, counts against
  ``max_concurrency`` from then, and its handler starts at ``startAt`` (held at most
  ``MAX_HOLD_SECONDS``); its ``startedAt`` is when the handler started. Cancelled or drained
  while held, it ends CANCELLED without the handler ever starting; held past its ``deadline``
  (the pod was frozen through its tick), it ends TIMED_OUT without the handler ever starting:
  the sidecar never starts an attempt whose deadline has passed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cadenza_sidecar import protocol
from cadenza_sidecar.protocol import (
    ExecutionId,
    ExecutionRequest,
    JsonObject,
    Outcome,
    Report,
    RunState,
)
from cadenza_sidecar.runner import Handler
from cadenza_sidecar.settings import RunSettings
from cadenza_sidecar.spool_quota import Full

logger = logging.getLogger(__name__)

HELD_PAST_DEADLINE = (
    "the run's deadline passed while it was held for its startAt; it was not started"
)

Settle = Callable[[Report], Awaitable[Report]]
"""Hands a finished run's report on (spools and sends it); returns the report as kept."""
Undelivered = Callable[[ExecutionId], Report | None]
Reserve = Callable[[ExecutionRequest, str], None]
"""Takes spool room for a run about to start on the pod named; raises ``Full``."""


class Busy(Exception):
    """The pod already runs ``capacity`` executions, or (``reason`` says) its spool is full."""

    def __init__(self, in_flight: int, capacity: int, reason: str | None = None) -> None:
        super().__init__(reason or f"busy: {in_flight}/{capacity} runs in flight")
        self.in_flight = in_flight
        self.capacity = capacity
        self.reason = reason


class Draining(Exception):
    """The sidecar is shutting down and admits no new runs."""


@dataclass(eq=False)
class Run:
    """A run in flight."""

    request: ExecutionRequest
    pod: str
    started_at: str = field(default_factory=protocol.now)
    cancel_reason: str | None = None
    cancel_requested: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def view(self) -> JsonObject:
        return protocol.run_view(
            self.request.execution_id,
            RunState.RUNNING,
            attempt=self.request.attempt,
            pod=self.pod,
            started_at=self.started_at,
        )

    def cancel(self, reason: str) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason
            self.cancel_requested.set()


class RunRegistry:
    """Every run this process knows about: the ones in flight and recently finished ones."""

    def __init__(
        self,
        settings: RunSettings,
        handler: Handler,
        *,
        settle: Settle,
        undelivered: Undelivered,
        reserve: Reserve,
        pod: str,
    ) -> None:
        self._settings = settings
        self._handler = handler
        self._settle = settle
        self._reserve = reserve
        self._undelivered = undelivered
        self._pod = pod
        self._running: dict[ExecutionId, Run] = {}
        # Insertion order is finishing order, so the oldest entries sit at the front.
        self._finished: collections.OrderedDict[ExecutionId, tuple[float, Report]] = (
            collections.OrderedDict()
        )
        self.draining = False

    @property
    def in_flight(self) -> int:
        return len(self._running)

    @property
    def capacity(self) -> int:
        return self._settings.max_concurrency

    def lookup(self, execution_id: ExecutionId) -> Run | Report | None:
        if run := self._running.get(execution_id):
            return run
        self._forget_expired()
        entry = self._finished.get(execution_id)
        return entry[1] if entry else self._undelivered(execution_id)

    def view(self, execution_id: ExecutionId) -> JsonObject | None:
        known = self.lookup(execution_id)
        return None if known is None else known.view()

    def remember(self, report: Report) -> None:
        """Records a run finished by an earlier process (from the spool) for idempotency."""
        if report.execution_id not in self._running:
            self._finished[report.execution_id] = (time.monotonic(), report)
            self._finished.move_to_end(report.execution_id)

    def start(self, request: ExecutionRequest) -> Run:
        """Admits and starts a new run; the caller has checked ``lookup`` first."""
        if self.draining:
            raise Draining()
        if len(self._running) >= self._settings.max_concurrency:
            raise Busy(len(self._running), self._settings.max_concurrency)
        try:
            self._reserve(request, self._pod)
        except Full as full:
            raise Busy(len(self._running), self._settings.max_concurrency, str(full)) from None
        run = Run(request=request, pod=self._pod)
        self._running[request.execution_id] = run
        run.task = asyncio.create_task(self._execute(run), name=f"run:{request.execution_id}")
        # At debug only: a line per run as it is admitted cost the sidecar's admission of a
        # batch nearly half its CPU. The "run finished" line carries the same fields.
        logger.debug(
            "run started",
            extra={
                "executionId": request.execution_id,
                "task": request.task,
                "handler": request.handler,
                "attempt": request.attempt,
                "epoch": request.epoch,
                "timeoutSeconds": request.timeout_seconds,
            },
        )
        return run

    async def cancel(self, run: Run, reason: str, wait_seconds: float) -> None:
        """Asks a run to stop and waits (bounded) until it has."""
        run.cancel(reason)
        if run.task is not None:
            await asyncio.wait([run.task], timeout=wait_seconds)

    async def drain(self, grace_seconds: float, reason: str = "sidecar is shutting down") -> None:
        """Refuses new runs, lets running ones finish within the grace, then cancels the rest."""
        self.draining = True
        tasks = [run.task for run in self._running.values() if run.task is not None]
        if not tasks:
            return
        logger.info(
            "waiting for runs in flight", extra={"count": len(tasks), "graceSeconds": grace_seconds}
        )
        _, unfinished = await asyncio.wait(tasks, timeout=grace_seconds)
        if not unfinished:
            return
        logger.warning("grace over; cancelling runs in flight", extra={"count": len(unfinished)})
        for run in list(self._running.values()):
            run.cancel(reason)
        await asyncio.wait(unfinished)

    async def _execute(self, run: Run) -> None:
        request = run.request
        try:
            outcome = await self._outcome(run)
        except Exception as exc:
            logger.exception(
                "run crashed inside the sidecar", extra={"executionId": request.execution_id}
            )
            outcome = Outcome(RunState.FAILED, error=f"sidecar error: {exc!r}")
        report = Report(
            execution_id=request.execution_id,
            status=outcome.state,
            attempt=request.attempt,
            pod=self._pod,
            started_at=run.started_at,
            finished_at=protocol.now(),
            result=outcome.result,
            error=outcome.error,
            exit_code=outcome.exit_code,
            callback_url=request.callback_url,
            callback_token=request.callback_token,
            callback_batch_url=request.callback_batch_url,
        )
        try:
            report = await self._settle(report)
        except Exception:
            logger.exception(
                "could not settle a result", extra={"executionId": report.execution_id}
            )
        finally:
            del self._running[request.execution_id]
            self._finished[request.execution_id] = (time.monotonic(), report)
            self._forget_expired()
            logger.info(
                "run finished",
                extra={
                    "executionId": request.execution_id,
                    "task": request.task,
                    "handler": request.handler,
                    "attempt": request.attempt,
                    "epoch": request.epoch,
                    "status": report.status.value,
                    "exitCode": report.exit_code,
                    "error": report.error,
                },
            )

    async def _outcome(self, run: Run) -> Outcome:
        """Runs the handler against the timeout and the cancel request, whichever comes first."""
        request = run.request
        hold = request.hold_seconds(datetime.now(UTC))
        if hold > 0:
            # Sent ahead of its tick: admitted (it holds its slot), started at ``startAt``.
            with contextlib.suppress(TimeoutError):  # not wait_for: see callback_batches
                async with asyncio.timeout(hold):
                    await run.cancel_requested.wait()
            if run.cancel_reason is not None:
                return Outcome(
                    RunState.CANCELLED, error=f"cancelled before it started: {run.cancel_reason}"
                )
            if not request.may_start(datetime.now(UTC)):
                # Held past its deadline (the pod was frozen or starved through its tick).
                return Outcome(RunState.TIMED_OUT, error=HELD_PAST_DEADLINE)
            run.started_at = protocol.now()
        allowed = max(request.time_allowed(datetime.now(UTC)), 0.0)
        invocation = asyncio.create_task(self._handler.invoke(request))
        cancel_requested = asyncio.create_task(run.cancel_requested.wait())
        try:
            await asyncio.wait(
                [invocation, cancel_requested],
                timeout=allowed,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            cancel_requested.cancel()
            if not invocation.done():
                invocation.cancel()
                # Waits for the handler to stop (the command to be killed and reaped).
                with contextlib.suppress(asyncio.CancelledError):
                    await invocation
        if not invocation.cancelled():
            return invocation.result()
        if run.cancel_reason is not None:
            return Outcome(RunState.CANCELLED, error=f"cancelled: {run.cancel_reason}")
        if allowed < request.timeout_seconds:
            return Outcome(
                RunState.TIMED_OUT,
                error=f"stopped at the run's deadline, {allowed:.3g} seconds after it started",
            )
        return Outcome(
            RunState.TIMED_OUT, error=f"timed out after {request.timeout_seconds:g} seconds"
        )

    def _forget_expired(self) -> None:
        horizon = time.monotonic() - self._settings.finished_retention_seconds
        while self._finished:
            finished_at, _ = next(iter(self._finished.values()))
            if len(self._finished) <= self._settings.finished_retention_count and (
                finished_at >= horizon
            ):
                break
            self._finished.popitem(last=False)

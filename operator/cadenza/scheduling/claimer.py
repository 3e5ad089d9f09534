"""Claiming the scheduler's ticks and triggers in batches, and handing each claimed run to the
lifecycle at its tick.

Invariants:
- A batch of claims is one fenced transaction (so the commit is off the fire path), and the
  earlier claims of a Task in a batch count as in flight for its later ones when its mode
  decides whether a tick runs, queues or is skipped.
- A claim of a Task the mirror has not written yet is not lost: it waits, and goes with the
  Task's current plan once the mirror writes the Task (or every ``DEFER_SECONDS``). A run of a
  Task without its row would find no retry policy for its callbacks and no parent for its
  balancer state (the indexes, which the scheduler reads, are ahead of the mirror by its
  debounce).
- A scheduled run is handed over at its tick, or at once when a pod of its Task holds runs
  until their tick (sidecar protocol version 3): it is recorded then, and sent ahead with
  ``startAt``, ``send_ahead`` seconds before the tick (at once when claimed later than that, or
  without a send lead). A run claimed in an earlier wave than the claim lead is sent as much
  earlier.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta

from cadenza import failpoints
from cadenza.core import modes
from cadenza.core.ids import TaskUid
from cadenza.core.transitions import RunStatus
from cadenza.metrics import Metrics
from cadenza.scheduling.claims import Claim, Claimed, Origin
from cadenza.scheduling.lifecycle import Lifecycle
from cadenza.scheduling.plans import TaskPlan
from cadenza.store.port import NewRun, RunStore

log = logging.getLogger(__name__)

DEFER_SECONDS = 2.0
"""How soon claims waiting for the mirror are tried again when no mirror write named their Task
(the write may have landed while their claim was in flight). A write that names it lets them go
at once (:meth:`Claimer.mirrored`)."""

_STATUS_OF = {
    modes.TickDecision.RUN: RunStatus.CLAIMED,
    modes.TickDecision.QUEUE: RunStatus.QUEUED,
    modes.TickDecision.SKIP: RunStatus.SKIPPED,
}


class Claimer:
    def __init__(
        self,
        *,
        store: RunStore,
        lifecycle: Lifecycle,
        metrics: Metrics,
        clock: Callable[[], datetime],
        lead: float = 0.0,
        send_ahead: float | None = None,
    ) -> None:
        self._store = store
        self._hold = max(lead - send_ahead, 0.0) if send_ahead is not None else 0.0
        """How long a run claimed ``lead`` ahead of its tick (or more: in waves) and recorded at
        once waits before it is sent ahead: the claim's and the record's transactions are then
        off the path of the sends."""
        self._send_ahead = send_ahead or 0.0
        self._lifecycle = lifecycle
        self._metrics = metrics
        self._now = clock
        self._deferred: dict[TaskUid, list[Claim]] = {}
        """Claims of Tasks the mirror has not written yet, by Task."""
        self._mirrored: set[TaskUid] = set()
        """Tasks the mirror wrote since the last look at the deferred claims."""
        self._retry_at: datetime | None = None

    def mirrored(self, tasks: Iterable[TaskUid]) -> bool:
        """The mirror wrote these Tasks' rows; True when claims wait for one of them (they may
        go now)."""
        self._mirrored.update(tasks)
        return self._ready()

    def forget(self, task: TaskUid) -> None:
        """The Task went: its claims waiting for the mirror go with it."""
        self._deferred.pop(task, None)

    def seconds_to_retry(self) -> float | None:
        """How soon waiting claims are to be tried again (0: now); None when none waits."""
        if self._ready():
            return 0.0  # written while their claim was in flight
        if self._retry_at is None:
            return None
        return (self._retry_at - self._now()).total_seconds()

    def undeferred(self, plans: Mapping[TaskUid, TaskPlan]) -> list[Claim]:
        """Claims that waited for the mirror and may go now, with their Task's current plan:
        those of Tasks written since, and all of them every ``DEFER_SECONDS`` (retrying all on
        every loop kept a leader handed thousands of Tasks at once asking for rows the mirror had
        not written yet, and so from writing them)."""
        every = self._retry_at is not None and self._now() >= self._retry_at
        tasks = list(self._deferred) if every else list(self._mirrored & self._deferred.keys())
        self._mirrored.clear()
        if every:
            self._retry_at = None
        due: list[Claim] = []
        for uid in tasks:
            claims = self._deferred.pop(uid)
            plan = plans.get(uid)
            if plan is not None:  # a Task deleted meanwhile: its claims go with it
                due.extend(dataclasses.replace(c, plan=plan) for c in claims)
        return due

    async def claim(self, claims: Iterable[Claim]) -> None:
        """Claim a batch of ticks and triggers in one fenced transaction; hand over what it
        claimed, keep what waits for the mirror."""
        batch = list(claims)
        if not batch:
            return
        earlier: Counter[TaskUid] = Counter()
        decided = []
        for claim in batch:
            decided.append((claim, self._decide(claim, earlier[claim.plan.uid])))
            earlier[claim.plan.uid] += 1
        result = await self._store.claim(
            [
                NewRun(
                    task=c.plan.uid,
                    namespace=c.plan.namespace,
                    name=c.plan.name,
                    tick=c.tick,
                    origin=c.origin,
                    status=status,
                    max_attempts=c.plan.retry.max_attempts,
                    trigger_key=c.trigger_key,
                )
                for c, status in decided
            ]
        )
        failpoints.reached("after-claim")
        deferred = [c for c, _ in decided if c.plan.uid in result.unmirrored]
        if deferred:
            log.info("%d claims wait for the mirror to write their Tasks", len(deferred))
            for claim in deferred:
                self._deferred.setdefault(claim.plan.uid, []).append(claim)
            if self._retry_at is None:
                self._retry_at = self._now() + timedelta(seconds=DEFER_SECONDS)
        counted: Counter[RunStatus] = Counter()
        for (claim, status), run in zip(decided, result.runs, strict=True):
            if run is None:
                continue
            counted[status] += 1
            self._hand_over(Claimed(claim, run, status))
        for status, count in counted.items():
            self._metrics.ticks.labels(decision=status.value).inc(count)

    def timing(self, claim: Claim, now: datetime) -> tuple[float, datetime | None]:
        """Seconds from ``now`` until the claimed run goes to the lifecycle, and when it is to
        be sent if later than that. At its tick; or at once when a pod of its Task starts it at
        the tick (nothing left to do then), recorded now and sent at the send lead."""
        fire_at = claim.tick if claim.origin is Origin.SCHEDULE and claim.tick else now
        delay = max((fire_at - now).total_seconds(), 0.0)
        if delay == 0 or not self._lifecycle.sends_ahead(claim.plan.uid):
            return delay, None
        hold = min(self._hold, max(delay - self._send_ahead, 0.0))
        return 0.0, now + timedelta(seconds=hold) if hold > 0 else None

    def _ready(self) -> bool:
        return bool(self._mirrored & self._deferred.keys())

    def _decide(self, claim: Claim, same: int) -> RunStatus:
        plan = claim.plan
        decision = modes.decide_tick(
            plan.mode,
            self._lifecycle.in_flight(plan.uid) + same,
            plan.max_concurrent,
            queued_runs=self._lifecycle.queued(plan.uid),
        )
        return _STATUS_OF[decision]

    def _hand_over(self, item: Claimed) -> None:
        claim = item.claim
        if item.status is RunStatus.SKIPPED:
            log.info("task %s: tick %s skipped (a run is still going)", claim.plan.key, claim.tick)
            self._lifecycle.skipped(claim.plan.uid, item.run)
            return
        requested = self._now()
        delay, send_at = self.timing(claim, requested)
        loop = asyncio.get_running_loop()
        # Runs recorded ahead go at once: in the order claimed, and without a timer each.
        hand = functools.partial(loop.call_later, delay) if delay > 0 else loop.call_soon
        hand(
            self._lifecycle.claimed,
            item.run,
            claim.plan.uid,
            claim.tick,
            claim.origin.value,
            item.status,
            requested,
            send_at,
        )

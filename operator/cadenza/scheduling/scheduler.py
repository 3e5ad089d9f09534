"""The leader's scheduler loop: one heap of next fire times for every Task.

It sleeps until the earliest fire time or until a watched object changes, and has every tick
due within its Task's lead claimed in one fenced transaction (so the commit is off the fire
path) by the :mod:`~cadenza.scheduling.claimer`, which hands each claimed run to the lifecycle
at its tick, or at once when a pod of its Task holds runs until their tick (sidecar protocol
version 3: the run is sent ahead with ``startAt``, so the database and the sending are off the
fire path too). No kopf timer per Task.

The lead is ``LOOKAHEAD_SECONDS`` for most Tasks, and ``claim_ahead``
(``CADENZA_CLAIM_AHEAD_SECONDS``, which may be longer, so that more of a tick's runs are recorded
and sent before it) for a Parallel Task without ``maxConcurrent``: whether its tick runs does
not depend on the runs still going, which the other modes judge best close to the tick. When
many such Tasks share a tick, its claims go in waves up to ``claim_ahead_max`` ahead
(:class:`~cadenza.scheduling.firetimes.Waves`). Their runs are sent ``send_ahead``
(``CADENZA_SEND_AHEAD_SECONDS``) before the tick when that is shorter than the claim's lead.

Invariants:
- A tick is a pure function of the schedule and the previous tick (``Schedule.next_fire``),
  never of "now", so every leader derives the same ticks and ``UNIQUE(task_uid, scheduled_at)``
  lets each fire at most once, across leader changes.
- Editing a schedule, resuming a suspended Task or creating one never fires retroactively: the
  next tick is computed from the moment of the change.
- Ticks missed while no leader ran are counted from the Task's last claimed tick when a leader
  takes over, and handled by the Task's misfire policy within its starting deadline.
- A manual trigger (annotation ``cadenza.dev/trigger``) fires once per value:
  ``UNIQUE(task_uid, trigger_key)`` makes a value seen by an earlier leader a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from cadenza.core import modes
from cadenza.core.ids import TaskUid
from cadenza.core.triggers import trigger_key
from cadenza.kube.hub import Changes, Hub, names
from cadenza.metrics import Metrics
from cadenza.scheduling import misfires
from cadenza.scheduling.claimer import Claimer
from cadenza.scheduling.claims import (
    Claim,
    GoneHook,
    MisfireHook,
    Origin,
    ScheduleHook,
)
from cadenza.scheduling.firetimes import FireTimes, Waves
from cadenza.scheduling.lifecycle import Lifecycle
from cadenza.scheduling.plans import TaskPlan, plan_of
from cadenza.store.port import RunStore
from cadenza.waiting import at_most

log = logging.getLogger(__name__)

LOOKAHEAD_SECONDS = 0.25
MAX_IDLE_SECONDS = 5.0
REFRESH_SECONDS = 0.2
"""Changed Tasks are re-read at most this often, together. Watch events come in bursts (thousands
of Tasks applied at once, and every status write comes back as one); only the Tasks they name are
re-read (re-reading every Task for each event took 69 % of a leader's CPU with 10,000 Tasks, so
that ticks were claimed late), and a burst's changes make one batch of claims."""


class Scheduler:
    def __init__(
        self,
        *,
        hub: Hub,
        store: RunStore,
        lifecycle: Lifecycle,
        plans: dict[TaskUid, TaskPlan],
        metrics: Metrics,
        on_schedule: ScheduleHook,
        on_misfire: MisfireHook,
        on_gone: GoneHook,
        claim_ahead: float = LOOKAHEAD_SECONDS,
        send_ahead: float | None = None,
        claim_ahead_max: float = LOOKAHEAD_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._hub = hub
        self._store = store
        self._lifecycle = lifecycle
        self.plans = plans
        self._metrics = metrics
        self._on_schedule = on_schedule
        self._on_misfire = on_misfire
        self._on_gone = on_gone
        self._now = clock
        self._lookahead = timedelta(seconds=LOOKAHEAD_SECONDS)
        self._claim_ahead = max(timedelta(seconds=claim_ahead), self._lookahead)
        self._fire_times = FireTimes(Waves(max_lead=timedelta(seconds=claim_ahead_max)))
        self._claimer = Claimer(
            store=store,
            lifecycle=lifecycle,
            metrics=metrics,
            clock=clock,
            lead=self._claim_ahead.total_seconds(),
            send_ahead=send_ahead,
        )
        self._by_name: dict[tuple[str, str], TaskUid] = {
            (p.namespace, p.name): uid for uid, p in plans.items()
        }
        """The uid of each Task's plan by namespace and name, to find the plan of one that went."""
        self._changed: Changes | None = None
        self._loaded: list[Claim] | None = None

    def load(self) -> None:
        """Read every Task's plan now, before :meth:`run`: a new leader takes over the open runs
        of earlier epochs first, and their dispatch needs the plans (a run without a plan is
        cancelled as the run of a deleted Task)."""
        self._loaded = self._refresh(initial=True)

    def mirrored(self, tasks: Iterable[TaskUid]) -> None:
        """The mirror wrote these Tasks' rows: the claims that wait for them may go now."""
        if self._claimer.mirrored(tasks) and self._changed is not None:
            self._changed.wake()

    async def run(self) -> None:
        changes = self._changed = self._hub.subscribe()
        try:
            if self._loaded is None:
                self.load()
            # The manual triggers found by load(), and whatever changed since.
            triggered = (self._loaded or []) + self._refresh()
            await self._misfires()
            await self._claimer.claim(triggered)
            refreshed = -math.inf
            while True:
                await self.fire_due()
                if not changes.is_set():
                    await at_most(self._sleep_seconds(), changes.wait())
                if not changes.is_set():
                    continue
                hold = refreshed + REFRESH_SECONDS - time.monotonic()
                if hold > 0:
                    # Ticks due meanwhile still fire; the changes wait for the next refresh.
                    await asyncio.sleep(min(hold, self._sleep_seconds()))
                    continue
                refreshed = time.monotonic()
                changed = names("task", changes.take())
                await self._claimer.claim(self._refresh(changed))
        finally:
            self._hub.unsubscribe(changes)
            self._metrics.tasks_tracked.labels(part="plans").set(0)

    def crowded(self) -> bool:  # a crowded tick is being handed over (FireTimes.crowded_near)
        return self._fire_times.crowded_near(self._now())

    async def fire_due(self) -> None:
        """Claim every tick due within the lookahead (and claims waiting for the mirror)."""
        await self._claimer.claim(self._due())

    # -- plans --------------------------------------------------------------------------------

    def _refresh(
        self, changed: set[tuple[str, str]] | None = None, initial: bool = False
    ) -> list[Claim]:
        """Re-read the Tasks named in ``changed`` (every Task when None); reschedule the changed
        ones; the manual triggers to fire."""
        now = self._now()
        if changed is None:
            views = self._hub.tasks()
            live = {TaskUid(v.uid) for v in views}
            gone = [uid for uid in self.plans if uid not in live]
        else:
            views, gone = [], []
            for namespace, name in changed:
                view = self._hub.task(namespace, name)
                before = self._by_name.get((namespace, name))
                if before is not None and (view is None or view.uid != before):
                    gone.append(before)  # deleted, or deleted and created again
                if view is not None:
                    views.append(view)
        for uid in gone:
            self._forget(uid)
        triggers: list[Claim] = []
        for view in views:
            uid = TaskUid(view.uid)
            old = self.plans.get(uid)
            if old is not None and old.spec_hash == view.spec_hash and old.trigger == view.trigger:
                continue
            try:
                plan = plan_of(view)
            except Exception:  # plan_of reads any spec; should it not, only this Task waits
                log.exception("task %s/%s: no plan could be made", view.namespace, view.name)
                continue
            self._replan(old, plan, now)
            if not plan.trigger or not (initial or plan.trigger != (old.trigger if old else None)):
                continue
            if plan.runnable:
                triggers.append(Claim(plan, None, Origin.MANUAL, trigger_key(plan.trigger)))
            else:
                log.warning("task %s: trigger ignored, invalid spec: %s", plan.key, plan.problem)
        self._metrics.tasks_tracked.labels(part="plans").set(len(self.plans))
        return triggers

    def _replan(self, old: TaskPlan | None, plan: TaskPlan, now: datetime) -> None:
        self.plans[plan.uid] = plan
        self._by_name[(plan.namespace, plan.name)] = plan.uid
        if plan.problems:
            log.warning("task %s is not scheduled: %s", plan.key, plan.problem)
        # Changed problems too: the status reports them from the plan _reschedule passes on.
        if old is None or _timing_changed(old, plan) or old.problems != plan.problems:
            self._reschedule(plan, now)
        if plan.suspend and old is not None and not old.suspend:
            self._lifecycle.task_suspended(plan.uid)  # runs claimed ahead do not start

    def _forget(self, uid: TaskUid) -> None:
        """The Task went: everything the leader keeps for it goes too (its claims waiting for
        the mirror, its balancer state, its status bookkeeping); its open runs end as cancelled."""
        plan = self.plans.pop(uid, None)
        self._fire_times.discard(uid)
        self._claimer.forget(uid)
        self._lifecycle.task_gone(uid)
        if plan is None:
            return
        if self._by_name.get((plan.namespace, plan.name)) == uid:
            del self._by_name[(plan.namespace, plan.name)]
        self._on_gone(plan)

    def _reschedule(self, plan: TaskPlan, after: datetime) -> None:
        if plan.schedule is None or plan.suspend:
            self._fire_times.discard(plan.uid)
            self._on_schedule(plan, None)
            return
        try:
            tick = plan.schedule.next_fire(after)
        # Every accepted schedule computes; should one not, it stops alone, not the leader.
        except Exception as exc:
            log.exception("task %s: no fire time after %s; taken off the schedule", plan.key, after)
            plan = plan.unscheduled(
                "spec.schedule",
                f"no fire time after {after.isoformat()} could be computed ({exc!r});"
                " change the schedule",
            )
            if plan.uid in self.plans:
                self.plans[plan.uid] = plan
            self._fire_times.discard(plan.uid)
            self._on_schedule(plan, None)
            return
        if plan.mode is modes.ExecutionMode.PARALLEL and plan.max_concurrent is None:
            # It runs whatever else is going: claimed and sent early, in waves when crowded.
            self._fire_times.set(plan.uid, tick, self._claim_ahead, spread=True)
        else:
            self._fire_times.set(plan.uid, tick, self._lookahead)
        self._on_schedule(plan, tick)

    def _due(self) -> list[Claim]:
        horizon = self._now()
        due = self._claimer.undeferred(self.plans)
        while (found := self._fire_times.pop_due(horizon)) is not None:
            tick, uid = found
            plan = self.plans.get(uid)
            if plan is None or plan.schedule is None:
                continue
            due.append(Claim(plan, tick, Origin.SCHEDULE))
            # The following tick, pushed and reported; a Task whose schedule cannot compute it
            # is taken off the schedule there, alone.
            self._reschedule(plan, tick)
        return due

    def _sleep_seconds(self) -> float:
        until_tick = MAX_IDLE_SECONDS
        if (earliest := self._fire_times.earliest()) is not None:
            until_tick = (earliest - self._now()).total_seconds()
        if (until_retry := self._claimer.seconds_to_retry()) is not None:
            until_tick = min(until_tick, until_retry)
        return min(max(until_tick, 0.0), MAX_IDLE_SECONDS)

    # -- misfires -----------------------------------------------------------------------------

    async def _misfires(self) -> None:
        """Ticks missed while no leader ran, per each Task's misfire policy: computed in a
        worker thread, bounded per Task (:mod:`cadenza.scheduling.misfires`)."""
        scheduled = [p for p in self.plans.values() if p.schedule and not p.suspend]
        last = await self._store.last_ticks([p.uid for p in scheduled])
        found = await asyncio.to_thread(misfires.missed_ticks, scheduled, last, self._now())
        await self._claimer.claim(misfires.claims_of(found, self._metrics, self._on_misfire))


def _timing_changed(old: TaskPlan, new: TaskPlan) -> bool:
    """A change that moves the next tick or its claim: schedule, time zone, suspension, mode."""
    before = (old.schedule, old.suspend, old.mode, old.max_concurrent)
    return before != (new.schedule, new.suspend, new.mode, new.max_concurrent)

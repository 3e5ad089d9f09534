"""Ticks missed while no leader ran, per Task: what each Task missed and what of it fires now.

Computed in a worker thread when a leader takes over (:meth:`Scheduler.load` of the missed
ticks), never on the event loop, and bounded per Task by :func:`cadenza.core.misfire.catch_up`
whatever the outage: 10,000 every-second Tasks after a day without a leader cost what they cost
after a minute.

Invariant: a Task whose catch-up cannot be computed is logged and skipped alone; the others
still catch up.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime

from cadenza.core import misfire
from cadenza.core.ids import TaskUid
from cadenza.metrics import Metrics
from cadenza.scheduling.claims import Claim, MisfireHook, Origin
from cadenza.scheduling.plans import TaskPlan

log = logging.getLogger(__name__)

WINDOW_SECONDS = 3600
"""Without ``startingDeadlineSeconds``, missed ticks older than this are not considered."""


@dataclasses.dataclass(frozen=True)
class Missed:
    plan: TaskPlan
    catch_up: misfire.CatchUp

    @property
    def dropped(self) -> int:
        return self.catch_up.missed - len(self.catch_up.fire)

    def describe(self) -> str:
        more = "" if self.catch_up.exact else "more than "
        return f"missed {more}{self.catch_up.missed - (0 if self.catch_up.exact else 1)} ticks"


def missed_ticks(
    plans: Iterable[TaskPlan], last: Mapping[TaskUid, datetime], now: datetime
) -> list[Missed]:
    """What each scheduled Task with a last claimed tick missed since it, up to ``now``."""
    found = []
    for plan in plans:
        if plan.uid not in last or plan.schedule is None:
            continue
        try:
            caught = misfire.catch_up(
                plan.schedule,
                last[plan.uid],
                now,
                plan.misfire,
                plan.starting_deadline_seconds,
                plan.max_misfire_runs,
                plan.starting_deadline_seconds or WINDOW_SECONDS,
            )
        except Exception:
            log.exception("task %s: its missed ticks could not be computed; none fire", plan.key)
            continue
        if caught.missed:
            found.append(Missed(plan, caught))
    return found


def claims_of(found: Iterable[Missed], metrics: Metrics, on_misfire: MisfireHook) -> list[Claim]:
    """The claims of the missed ticks that fire now; each Task's misfire counted, told and
    logged."""
    claims: list[Claim] = []
    for missed in found:
        plan, fire = missed.plan, missed.catch_up.fire
        claims.extend(Claim(plan, tick, Origin.MISFIRE) for tick in fire)
        metrics.misfires.labels(action="fired").inc(len(fire))
        metrics.misfires.labels(action="dropped").inc(missed.dropped)
        on_misfire(plan, len(fire), missed.dropped)
        log.info(
            "task %s %s while no leader ran; firing %d (%s)",
            plan.key,
            missed.describe(),
            len(fire),
            plan.misfire.value,
        )
    return claims

"""Misfires: which ticks missed while no leader ran still fire when a leader takes over.

A tick is *within the deadline* when ``now - tick <= startingDeadlineSeconds`` (inclusive, as
in a Kubernetes CronJob; no deadline means every missed tick qualifies). Then:

- ``Skip``: none fire; the schedule resumes with the next future tick.
- ``FireOnce``: the latest tick within the deadline fires, once, standing in for all of them.
- ``FireAll``: every tick within the deadline fires, but at most ``cap``: the latest ones,
  because after a long outage the recent ticks are the ones whose results still matter.

Invariants: the plan is a pure function of its arguments; it is sorted, free of duplicates and
never contains a tick after ``now`` (such a tick is not missed; the scheduler fires it on time).
Each planned tick is still claimed through ``UNIQUE(task_uid, scheduled_at)``, so applying the
plan twice (two leaders in a row) fires nothing twice.

:func:`catch_up` bounds the work per Task, whatever the outage or clock jump: it counts missed
ticks only up to ``COUNT_LIMIT`` and finds the latest ticks it fires by searching back from
``now`` in doubling windows, never by walking every missed tick (an every-second Task misses
86,400 of them in a day).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from datetime import datetime, timedelta

from cadenza.core.schedule import Schedule

COUNT_LIMIT = 100
"""Missed ticks counted one by one at most; beyond, a catch-up says "more than" this."""


class MisfirePolicy(enum.StrEnum):
    SKIP = "Skip"
    FIRE_ONCE = "FireOnce"
    FIRE_ALL = "FireAll"


def plan_misfires(
    missed: Iterable[datetime],
    now: datetime,
    policy: MisfirePolicy,
    starting_deadline_seconds: int | None,
    cap: int,
) -> list[datetime]:
    """The missed ticks to fire now, earliest first."""
    if cap < 1:
        raise ValueError(f"cap must be at least 1, got {cap}")
    if starting_deadline_seconds is not None and starting_deadline_seconds < 0:
        raise ValueError(
            f"starting_deadline_seconds must not be negative, got {starting_deadline_seconds}"
        )
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    earliest = (
        None
        if starting_deadline_seconds is None
        else now - timedelta(seconds=starting_deadline_seconds)
    )
    eligible = sorted(
        {tick for tick in missed if tick <= now and (earliest is None or tick >= earliest)}
    )
    if policy is MisfirePolicy.SKIP or not eligible:
        return []
    if policy is MisfirePolicy.FIRE_ONCE:
        return eligible[-1:]
    return eligible[-cap:]


@dataclasses.dataclass(frozen=True)
class CatchUp:
    """What a Task missed and what of it fires now."""

    fire: list[datetime]
    """The ticks to claim now, earliest first."""
    missed: int
    """Ticks missed in the window (at least this many when ``exact`` is False)."""
    exact: bool


def catch_up(
    schedule: Schedule,
    last: datetime,
    now: datetime,
    policy: MisfirePolicy,
    starting_deadline_seconds: int | None,
    cap: int,
    window_seconds: int,
) -> CatchUp:
    """The ticks in (``last``, ``now``] and not older than ``window_seconds`` that fire now, by
    :func:`plan_misfires`; at most ``COUNT_LIMIT + O(cap)`` fire times computed per doubling of
    the search window."""
    start = max(last, now - timedelta(seconds=window_seconds))
    counted = schedule.fire_times(start, now, COUNT_LIMIT + 1)
    if len(counted) <= COUNT_LIMIT:
        fire = plan_misfires(counted, now, policy, starting_deadline_seconds, cap)
        return CatchUp(fire, len(counted), exact=True)
    wanted = {MisfirePolicy.SKIP: 0, MisfirePolicy.FIRE_ONCE: 1}.get(policy, cap)
    latest = latest_ticks(schedule, start, now, wanted) if wanted else []
    fire = plan_misfires(latest, now, policy, starting_deadline_seconds, cap)
    return CatchUp(fire, COUNT_LIMIT + 1, exact=False)


def latest_ticks(schedule: Schedule, after: datetime, until: datetime, n: int) -> list[datetime]:
    """The last ``n`` fire times in (``after``, ``until``], earliest first (fewer if there are
    not as many), computed from windows that end at ``until`` and double backwards; a window
    with too many ticks to walk is narrowed by bisection. Each walk stops at ``4 n + 16``."""
    limit = 4 * n + 16
    whole = int((until - after).total_seconds())

    def walk(span: int) -> list[datetime] | None:
        """The ticks in the last ``span`` seconds; None when there are more than ``limit``."""
        ticks = schedule.fire_times(max(after, until - timedelta(seconds=span)), until, limit)
        return None if len(ticks) == limit else ticks

    low, span = 0, 1
    while True:
        span = min(span, whole)
        ticks = walk(span)
        if ticks is None:
            break  # too many in (until - span, until]: bisect between low and span
        if len(ticks) >= n or span >= whole:
            return ticks[-n:]
        low, span = span, span * 2
    high = span
    while high - low > 1:
        middle = (low + high) // 2
        ticks = walk(middle)
        if ticks is None:
            high = middle
        elif len(ticks) >= n:
            return ticks[-n:]
        else:
            low = middle
    # One second more adds at most one tick: ``low`` has fewer than n, ``high`` more than limit.
    raise AssertionError(f"no window with {n} to {limit} ticks between {low} and {high} seconds")

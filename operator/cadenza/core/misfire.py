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
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import datetime, timedelta


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

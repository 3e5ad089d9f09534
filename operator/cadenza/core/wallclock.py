"""Wall clocks: where a zone's local times fall on the real (UTC) time line across DST changes.

A local wall-clock time can exist once, twice (the repeated hour when clocks fall back) or not at
all (the gap when they spring forward). ``first_instant`` maps it to one real instant: its first
occurrence, or for a time inside a gap the first instant after the gap. ``next_transition`` finds
where a zone's UTC offset changes, so a caller can walk the time line in constant-offset stretches.

Invariants: instants go in and come out as aware UTC datetimes; naive datetimes are wall-clock
times. Nothing reads the clock.

WARNING: ``next_transition`` probes the offset once a day and bisects between probes, so it would
miss a pair of transitions less than a day apart that cancel out. The tz database has none since
1970 (the closest pair is about a week apart), and Python's ``zoneinfo`` exposes no transition list.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

_PROBE_STEP = timedelta(days=1)
_SECOND = timedelta(seconds=1)


def offset_at(zone: ZoneInfo, instant: datetime) -> timedelta:
    """The zone's UTC offset in force at an aware instant."""
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None  # a ZoneInfo always knows its offset for an aware datetime
    return offset


def wall_time(zone: ZoneInfo, instant: datetime) -> datetime:
    """The naive local wall-clock time a clock in the zone shows at an aware instant."""
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def first_instant(zone: ZoneInfo, wall: datetime) -> datetime:
    """The first real instant (UTC) at which the zone's clocks show ``wall``, or, when ``wall``
    falls in a spring-forward gap and never shows, the first instant after the gap."""
    # PEP 495: fold=0 picks the earlier of two occurrences; inside a gap it applies the offset
    # from before the change, which lands after the gap, and fold=1 lands before it.
    after_gap = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if wall_time(zone, after_gap) == wall.replace(fold=0):
        return after_gap
    before_gap = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    return _bisect_transition(zone, before_gap, after_gap, offset_at(zone, before_gap))


def next_transition(zone: ZoneInfo, start: datetime, end: datetime) -> datetime | None:
    """The first whole-second instant in (start, end] whose UTC offset differs from the one in
    force at ``start``; None when the offset holds throughout."""
    offset = offset_at(zone, start)
    low = start
    while low < end:
        probe = min(low + _PROBE_STEP, end)
        if offset_at(zone, probe) != offset:
            return _bisect_transition(zone, low, probe, offset)
        low = probe
    return None


def _bisect_transition(
    zone: ZoneInfo, low: datetime, high: datetime, offset: timedelta
) -> datetime:
    # Invariant: offset_at(low) == offset != offset_at(high). Offsets change on whole seconds, so
    # bisecting whole seconds finds the exact instant of the change.
    low = low.replace(microsecond=0)
    if high.microsecond:
        high = high.replace(microsecond=0) + _SECOND
    while high - low > _SECOND:
        middle = low + (high - low) // 2
        middle = middle.replace(microsecond=0)
        if offset_at(zone, middle) == offset:
            low = middle
        else:
            high = middle
    return high

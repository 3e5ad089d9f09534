"""Schedules: a Task's ``schedule`` and ``timeZone`` turned into fire times.

Accepted ``schedule`` forms: 5-field cron (minute first); 6-field cron with **seconds first**
(``*/10 * * * * *`` is every 10 s, as in robfig/cron; croniter puts seconds last, so this module
parses cron itself, see ``cron``); the macros ``@yearly @annually @monthly @weekly @daily
@midnight @hourly``; and ``@every <duration>`` with Go-style units h, m, s (``@every 1h30m``),
a whole number of seconds from 1 s to 366 days (:data:`MAX_EVERY_SECONDS`).

Invariants:

- Fire times are a pure function of the schedule and the ``after`` argument, never of "now":
  every leader derives the same ticks, so ``UNIQUE(task_uid, scheduled_at)`` collapses duplicates.
  Ticks are aware UTC datetimes with whole seconds.
- ``@every P`` ticks at every whole multiple of P since the Unix epoch (UTC), whatever the time
  zone, so its ticks do not depend on when the Task was created or which leader computes them.

Daylight saving time. Cron fields match the LOCAL wall-clock time of ``timeZone``. Following
Vixie cron (the behaviour of the cron most Linux users know), a schedule is one of two kinds:

- Fixed-time: neither the minute nor the hour field starts with ``*`` (``30 2 * * *``,
  ``0 9-17 * * 1-5``, ``@daily``). It names times of day, and each named time fires exactly
  once per day it matches. A time that does not exist on spring-forward day fires once, at the
  first instant after the gap (02:30 daily in Europe/Berlin fires at 03:00 CEST on that day;
  several times inside one gap fire together, once). A time that occurs twice on fall-back day
  fires once, at its first occurrence.
- Interval: the minute or hour field starts with ``*`` (``*/15 * * * *``, ``30 * * * *``,
  ``@hourly``, every second). It fires at every real instant whose local wall time matches, so it
  keeps its real-time cadence: the skipped hour has nothing to fire (no real time passed), and
  the repeated hour fires again (real time did pass). ``*/15`` stays exactly 15 minutes apart in
  UTC through both changes.

The seconds field of a 6-field expression does not affect the kind.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import re
import zoneinfo
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from cadenza.core import cron, wallclock

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# ASCII digits only, as Go's time.ParseDuration: `\d` would also take "١٢".
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?|\.[0-9]+)([a-zµ]+)")
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+")
_DURATION_UNITS = {"h": 3600, "m": 60, "s": 1}
_SUBSECOND_UNITS = ("ms", "us", "µs", "ns")
MAX_EVERY_SECONDS = 366 * 24 * 3600
"""The longest ``@every`` interval (``@every 8784h``). Longer ones would put ticks centuries away,
past what a datetime or the database can hold; a rarer schedule is a cron expression."""
# A cadence walk crosses at most two offset changes a year; Feb 29 lies at most 8 years ahead.
_MAX_TRANSITIONS = 64


class ScheduleError(ValueError):
    """A Task's ``schedule`` or ``timeZone`` is invalid; ``field`` names which one, and the
    message names the field, the value and the fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A parsed schedule. Build it with ``parse_schedule``; exactly one of ``cron_fields`` and
    ``every_seconds`` is set."""

    expression: str
    time_zone: str
    zone: zoneinfo.ZoneInfo = dataclasses.field(repr=False)
    cron_fields: cron.CronFields | None = dataclasses.field(default=None, repr=False)
    every_seconds: int | None = None
    _last: tuple[datetime, datetime] | None = dataclasses.field(
        default=None, init=False, repr=False, compare=False
    )
    """The last answer, by its start: Tasks on one expression share a schedule and mostly ask
    for the same second (a thousand every-second Tasks ask once a second each)."""

    def next_fire(self, after: datetime) -> datetime:
        """The first fire time strictly after the aware datetime ``after``, in UTC."""
        if after.tzinfo is None or after.utcoffset() is None:
            raise ValueError(f"after must be an aware datetime, got naive {after.isoformat()}")
        start = after.astimezone(UTC).replace(microsecond=0) + _SECOND
        last = self._last  # one read: another thread may replace it, never half-way
        if last is not None and last[0] == start:
            return last[1]
        tick = self._first_from(start)
        object.__setattr__(self, "_last", (start, tick))  # a cache, not the value's state
        return tick

    def _first_from(self, start: datetime) -> datetime:
        if self.every_seconds is not None:
            elapsed = (start - _EPOCH) // _SECOND
            ticks = -(-elapsed // self.every_seconds)  # ceiling division
            return _EPOCH + timedelta(seconds=ticks * self.every_seconds)
        assert self.cron_fields is not None
        if self.cron_fields.wall_clock_fixed:
            return self._next_fixed_time(self.cron_fields, start)
        return self._next_interval(self.cron_fields, start)

    def fire_times(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """Fire times in (after, until], earliest first, at most ``limit`` of them."""
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        ticks: list[datetime] = []
        tick = after
        while len(ticks) < limit:
            tick = self.next_fire(tick)
            if tick > until:
                break
            ticks.append(tick)
        return ticks

    def _next_fixed_time(self, fields: cron.CronFields, start: datetime) -> datetime:
        # first_instant is non-decreasing in wall time, so the first matching wall time whose
        # instant is not before `start` is the answer; earlier ones belong to a repeated hour's
        # second pass or to a gap already fired.
        # Count from the wall time just before `start`, not at it: when `start` is the instant a
        # gap ends, its wall time already lies past the gap, whose times fire at `start`.
        wall = wallclock.wall_time(self.zone, start - _SECOND) + _SECOND
        while True:
            match = fields.next_match(wall)
            instant = wallclock.first_instant(self.zone, match)
            if instant >= start:
                return instant
            wall = match + _SECOND

    def _next_interval(self, fields: cron.CronFields, start: datetime) -> datetime:
        # Walk the real time line in stretches of constant UTC offset: inside one, wall time and
        # real time advance together, so the next matching wall time is the next fire time unless
        # the offset changes first; then restart from the change.
        cursor = start
        for _ in range(_MAX_TRANSITIONS):
            offset = wallclock.offset_at(self.zone, cursor)
            match = fields.next_match(wallclock.wall_time(self.zone, cursor))
            candidate = (match - offset).replace(tzinfo=UTC)
            change = wallclock.next_transition(self.zone, cursor, candidate)
            if change is None:
                return candidate
            cursor = change
        raise AssertionError(f"more than {_MAX_TRANSITIONS} offset changes before a match")


@functools.lru_cache(maxsize=4096)
def parse_schedule(expression: str, time_zone: str = "UTC") -> Schedule:
    """Parse a Task's ``schedule`` and ``timeZone``; raises ScheduleError naming the field.

    A schedule is immutable, so Tasks on the same expression and zone share one: thousands of
    Tasks are usually written on a few dozen schedules, and the expanded fields are the larger
    part of a parsed Task."""
    zone = _load_zone(time_zone)
    text = expression.strip()
    if not text:
        raise ScheduleError(
            "schedule", 'must not be empty; write a cron expression such as "*/5 * * * *"'
        )
    if text.split()[0] == "@every":
        return Schedule(text, time_zone, zone, every_seconds=_parse_every(text))
    if text.startswith("@"):
        return Schedule(text, time_zone, zone, cron_fields=_parse_cron(text, _expand_macro(text)))
    if re.match(r"(CRON_)?TZ=", text):
        raise ScheduleError(
            "schedule",
            f"{_quote(text)} embeds a time zone; remove the TZ= prefix and set timeZone instead",
        )
    return Schedule(text, time_zone, zone, cron_fields=_parse_cron(text, text))


def _parse_cron(expression: str, text: str) -> cron.CronFields:
    try:
        return cron.parse_fields(text.split())
    except cron.CronSyntaxError as error:
        raise ScheduleError(
            "schedule", f"{_quote(expression)} is not a valid cron expression: {error}"
        ) from None


def _expand_macro(text: str) -> str:
    if text.lower() in _MACROS:
        return _MACROS[text.lower()]
    known = ", ".join(_MACROS)
    raise ScheduleError(
        "schedule", f"unknown macro {_quote(text)}; use one of {known} or @every <duration>"
    )


def _parse_every(text: str) -> int:
    duration = text.split(maxsplit=1)[1] if " " in text or "\t" in text else ""
    example = 'write it like "@every 90s" or "@every 1h30m"'
    if not duration:
        raise ScheduleError("schedule", f"{_quote(text)} has no duration; {example}")
    if not _DURATION.fullmatch(duration):
        raise ScheduleError(
            "schedule", f"{_quote(text)} is not a valid duration (units h, m, s); {example}"
        )
    total = Fraction(0)
    for number, unit in _DURATION_PART.findall(duration):
        if unit in _SUBSECOND_UNITS:
            raise ScheduleError(
                "schedule",
                f"{_quote(text)} uses {unit}, a unit below one second; the minimum interval is 1s",
            )
        if unit not in _DURATION_UNITS:
            raise ScheduleError(
                "schedule", f"{_quote(text)} uses unknown unit {_quote(unit)}; use h, m or s"
            )
        total += Fraction(number) * _DURATION_UNITS[unit]
    return _whole_seconds(text, total)


def _whole_seconds(text: str, total: Fraction) -> int:
    if total < 1:
        raise ScheduleError(
            "schedule", f"{_quote(text)} is shorter than the minimum interval of 1s"
        )
    if total > MAX_EVERY_SECONDS:
        raise ScheduleError(
            "schedule",
            f"{_quote(text)} is longer than the maximum interval of"
            f" {MAX_EVERY_SECONDS // 3600}h (366 days); use a cron expression such as @yearly",
        )
    if total.denominator != 1:
        raise ScheduleError(
            "schedule", f"{_quote(text)} is not a whole number of seconds; round it, e.g. to 2s"
        )
    return int(total)


def _load_zone(time_zone: str) -> zoneinfo.ZoneInfo:
    # Checking against the list rather than trying ZoneInfo(name) also refuses paths
    # ("../../etc/passwd") and names that load on one machine but not on another.
    if time_zone in _known_zones():
        return zoneinfo.ZoneInfo(time_zone)
    hint = 'use an IANA name such as "Europe/Berlin" or "UTC"'
    close = difflib.get_close_matches(time_zone, _known_zones(), n=1)
    if close:
        hint = f'did you mean "{close[0]}"?'
    raise ScheduleError("timeZone", f"{_quote(time_zone)} is not a known IANA time zone; {hint}")


def _quote(text: str) -> str:
    # Double quotes, as the value appears in YAML and JSON, with control characters escaped.
    return json.dumps(text, ensure_ascii=False)


@functools.cache
def _known_zones() -> frozenset[str]:
    # The system tz directory also lists links that mean "this machine's zone"; a Task's zone
    # must mean the same on every replica.
    return frozenset(zoneinfo.available_timezones()) - {"localtime", "posixrules"}

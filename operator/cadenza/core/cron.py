"""Cron fields: parsing an expression's fields and finding the next matching wall-clock time.

The syntax is robfig/cron's (the original system's): 5 fields ``minute hour day-of-month month
day-of-week``, or 6 with **seconds first**. A field is a comma-separated list of ``*``, ``?``
(day fields only), ``N``, ``A-B``, each optionally followed by ``/STEP``; ``N/STEP`` means
``N-max/STEP``.
Months accept ``JAN``-``DEC`` and days of the week ``SUN``-``SAT`` (any case); Sunday is 0 or 7.
Quartz extensions (``L``, ``W``, ``#``) are not supported.

Day matching follows Vixie cron and robfig: when both day-of-month and day-of-week are restricted,
a day matches if *either* does; a field written ``*`` or ``?`` (step 1) is unrestricted.
``*/2`` in a day field is restricted, as in robfig.

This module knows nothing about time zones: it matches naive wall-clock times. The DST rules live
in ``schedule`` (see there), which needs one fact from here, ``wall_clock_fixed``: Vixie cron's
distinction between a schedule pinned to a time of day and one with ``*`` in its minute or hour.

Invariant: ``parse_fields`` refuses an expression that can never fire (``0 0 30 2 *``), so
``CronFields.next_match`` always finds a match within the leap-year cycle.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
from datetime import date, datetime, time, timedelta

_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# The longest each month can be; February's 29 keeps `0 0 29 2 *` (leap days) valid.
_MONTH_MAX_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# Feb 29 can be 8 years away (2096 -> 2104); one more year of margin bounds every search.
_SEARCH_DAYS = 9 * 366


class CronSyntaxError(ValueError):
    """A cron expression is malformed; the message says which field and why, without the field
    prefix or the expression (the caller adds those)."""


@dataclasses.dataclass(frozen=True)
class _FieldSpec:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    # The value the first name stands for (JAN = 1, SUN = 0).
    names_base: int = 0
    # The range ``*`` expands to; differs from low-high only for day-of-week (7 aliases Sunday).
    star_high: int | None = None
    allows_question_mark: bool = False


_SECOND = _FieldSpec("second", 0, 59)
_MINUTE = _FieldSpec("minute", 0, 59)
_HOUR = _FieldSpec("hour", 0, 23)
_DAY_OF_MONTH = _FieldSpec("day-of-month", 1, 31, allows_question_mark=True)
_MONTH = _FieldSpec("month", 1, 12, names=_MONTH_NAMES, names_base=1)
_DAY_OF_WEEK = _FieldSpec(
    "day-of-week", 0, 7, names=_DAY_NAMES, names_base=0, star_high=6, allows_question_mark=True
)


@dataclasses.dataclass(frozen=True)
class CronFields:
    """The expanded fields of one cron expression, each a sorted tuple of allowed values."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_month: tuple[int, ...]
    months: tuple[int, ...]
    days_of_week: tuple[int, ...]
    """0 = Sunday ... 6 = Saturday (a written 7 is stored as 0)."""
    day_of_month_restricted: bool
    day_of_week_restricted: bool
    wall_clock_fixed: bool
    """True unless the minute or hour field starts with ``*`` (Vixie cron's "wildcard job")."""

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days_of_month
        # date.weekday() is Monday = 0; cron counts from Sunday = 0.
        dow = (day.weekday() + 1) % 7 in self.days_of_week
        if self.day_of_month_restricted and self.day_of_week_restricted:
            return dom or dow
        return dom and dow

    def matches(self, wall: datetime) -> bool:
        return (
            self.matches_day(wall.date())
            and wall.hour in self.hours
            and wall.minute in self.minutes
            and wall.second in self.seconds
        )

    def next_match(self, start: datetime) -> datetime:
        """The first wall-clock time at or after naive ``start`` that matches (whole seconds:
        a fractional ``start`` is rounded up)."""
        if start.microsecond:
            start = start.replace(microsecond=0) + timedelta(seconds=1)
        day, clock = start.date(), start.time()
        for _ in range(_SEARCH_DAYS):
            if self.matches_day(day):
                hit = self._first_time_from(clock)
                if hit is not None:
                    return datetime.combine(day, hit)
            day, clock = self._next_day(day), time(0)
        raise AssertionError(f"no match within {_SEARCH_DAYS} days; parse_fields should refuse")

    def _next_day(self, day: date) -> date:
        following = day + timedelta(days=1)
        if following.month in self.months:
            return following
        # Jump straight to the next allowed month rather than walking its days.
        month_index = bisect.bisect_right(self.months, following.month)
        if month_index < len(self.months):
            return date(following.year, self.months[month_index], 1)
        return date(following.year + 1, self.months[0], 1)

    def _first_time_from(self, clock: time) -> time | None:
        for hour in self.hours[bisect.bisect_left(self.hours, clock.hour) :]:
            minute_from = clock.minute if hour == clock.hour else 0
            for minute in self.minutes[bisect.bisect_left(self.minutes, minute_from) :]:
                same_minute = hour == clock.hour and minute == clock.minute
                second_from = clock.second if same_minute else 0
                index = bisect.bisect_left(self.seconds, second_from)
                if index < len(self.seconds):
                    return time(hour, minute, self.seconds[index])
        return None


def parse_fields(fields: list[str]) -> CronFields:
    """Expand 5 fields, or 6 with seconds first. Raises CronSyntaxError."""
    if len(fields) == 5:
        fields = ["0", *fields]
    elif len(fields) != 6:
        given = f"{len(fields)} field{'' if len(fields) == 1 else 's'} given"
        raise CronSyntaxError(
            f"{given}; expected 5 (minute hour day-of-month month day-of-week)"
            " or 6 (second minute hour day-of-month month day-of-week)"
        )
    second, minute, hour, dom, month, dow = fields
    seconds, _ = _parse_field(second, _SECOND)
    minutes, _ = _parse_field(minute, _MINUTE)
    hours, _ = _parse_field(hour, _HOUR)
    days_of_month, dom_star = _parse_field(dom, _DAY_OF_MONTH)
    months, _ = _parse_field(month, _MONTH)
    days_of_week, dow_star = _parse_field(dow, _DAY_OF_WEEK)
    parsed = CronFields(
        seconds=seconds,
        minutes=minutes,
        hours=hours,
        days_of_month=days_of_month,
        months=months,
        days_of_week=tuple(sorted({d % 7 for d in days_of_week})),
        day_of_month_restricted=not dom_star,
        day_of_week_restricted=not dow_star,
        wall_clock_fixed=not (minute.startswith("*") or hour.startswith("*")),
    )
    _check_fires_ever(parsed)
    return parsed


def _check_fires_ever(parsed: CronFields) -> None:
    # Only a restricted day-of-month ANDed with an unrestricted day-of-week can be impossible:
    # every month contains every weekday.
    if not parsed.day_of_month_restricted or parsed.day_of_week_restricted:
        return
    if any(d <= _MONTH_MAX_DAYS[m - 1] for m in parsed.months for d in parsed.days_of_month):
        return
    days = ",".join(map(str, parsed.days_of_month))
    months = ",".join(_MONTH_NAMES[m - 1] for m in parsed.months)
    raise CronSyntaxError(
        f"day-of-month {days} never occurs in {months}, so the schedule would never fire;"
        " pick a day that exists in those months"
    )


def _parse_field(text: str, spec: _FieldSpec) -> tuple[tuple[int, ...], bool]:
    """Return the sorted values and whether the field is unrestricted (``*`` or ``?``)."""
    values: set[int] = set()
    unrestricted = False
    for part in text.split(","):
        if not part:
            raise CronSyntaxError(f"{spec.name} field {_quote(text)} has an empty list element")
        part_values, part_star = _parse_part(part, spec)
        values.update(part_values)
        unrestricted = unrestricted or part_star
    return tuple(sorted(values)), unrestricted


def _parse_part(part: str, spec: _FieldSpec) -> tuple[range, bool]:
    range_text, slash, step_text = part.partition("/")
    step = _parse_step(step_text, spec) if slash else 1
    if range_text in ("*", "?"):
        if range_text == "?" and not spec.allows_question_mark:
            raise CronSyntaxError(
                f"'?' is only allowed in day-of-month and day-of-week, not in {spec.name}"
            )
        return range(spec.low, _star_high(spec) + 1, step), step == 1
    low_text, dash, high_text = range_text.partition("-")
    low = _parse_value(low_text, spec)
    if dash:
        high = _parse_value(high_text, spec)
    elif slash:
        # robfig: "N/STEP" runs from N to the field's maximum (Saturday, not 7, for weekdays).
        high = _star_high(spec)
    else:
        high = low
    if low > high:
        raise CronSyntaxError(
            f"{spec.name} range {range_text} is backwards; write {high_text}-{low_text},"
            " or split a wrap-around into a list such as 22-23,0-2"
        )
    return range(low, high + 1, step), False


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _star_high(spec: _FieldSpec) -> int:
    return spec.high if spec.star_high is None else spec.star_high


def _parse_step(text: str, spec: _FieldSpec) -> int:
    span = spec.high - spec.low
    if not text.isdigit() or not text.isascii():
        raise CronSyntaxError(f"{spec.name} step {_quote(text)} is not a whole number")
    step = int(text)
    if not 1 <= step <= span:
        raise CronSyntaxError(f"{spec.name} step {step} out of range 1-{span}")
    return step


def _parse_value(text: str, spec: _FieldSpec) -> int:
    if text.isdigit() and text.isascii():
        value = int(text)
        if not spec.low <= value <= spec.high:
            raise CronSyntaxError(f"{spec.name} value {value} out of range {spec.low}-{spec.high}")
        return value
    if text.upper() in spec.names:
        return spec.names.index(text.upper()) + spec.names_base
    expected = f"a number {spec.low}-{spec.high}"
    if spec.names:
        expected += f" or a name {spec.names[0]}-{spec.names[-1]}"
    raise CronSyntaxError(f"{spec.name} value {_quote(text)} is not {expected}")

"""Daylight saving: fixed-time schedules fire once per named time, interval schedules keep their
real-time cadence (the rules are in cadenza.core.schedule's docstring).

Transitions used (2024): Europe/Berlin 03-31 01:00Z (02:00 CET -> 03:00 CEST) and 10-27 01:00Z
(03:00 CEST -> 02:00 CET); America/New_York 03-10 07:00Z (02:00 EST -> 03:00 EDT) and 11-03 06:00Z
(02:00 EDT -> 01:00 EST); Australia/Lord_Howe 10-05 15:30Z (02:00 -> 02:30, +10:30 -> +11) and
04-06 15:00Z (02:00 -> 01:30).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from cadenza.core import schedule


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def fire_times(expression: str, zone: str, after: datetime, until: datetime) -> list[datetime]:
    return schedule.parse_schedule(expression, zone).fire_times(after, until, 10_000)


def walls(found: list[datetime], zone: str) -> list[str]:
    """Local wall times with their UTC offsets, the way a user reads them."""
    return [tick.astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M:%S%z") for tick in found]


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"),
    [
        # A daily time inside the spring-forward gap fires once, at the end of the gap.
        (
            "30 2 * * *",
            "Europe/Berlin",
            utc(2024, 3, 30, 1, 30),
            ["03-31 03:00:00+0200", "04-01 02:30:00+0200"],
        ),
        (
            "30 2 * * *",
            "America/New_York",
            utc(2024, 3, 9, 7, 30),
            ["03-10 03:00:00-0400", "03-11 02:30:00-0400"],
        ),
        (
            "15 2 * * *",
            "Australia/Lord_Howe",
            utc(2024, 10, 4, 15, 45),
            ["10-06 02:30:00+1100", "10-07 02:15:00+1100"],
        ),
        # Several named times inside one gap still fire once.
        (
            "0,15,30,45 2 * * *",
            "Europe/Berlin",
            utc(2024, 3, 30, 12),
            ["03-31 03:00:00+0200", "04-01 02:00:00+0200"],
        ),
        (
            "0 2,3 * * *",
            "Europe/Berlin",
            utc(2024, 3, 30, 12),
            ["03-31 03:00:00+0200", "04-01 02:00:00+0200"],
        ),
        # A daily time repeated by the fall-back fires once, at its first occurrence.
        (
            "30 2 * * *",
            "Europe/Berlin",
            utc(2024, 10, 26, 1),
            ["10-27 02:30:00+0200", "10-28 02:30:00+0100"],
        ),
        (
            "30 1 * * *",
            "America/New_York",
            utc(2024, 11, 2, 6),
            ["11-03 01:30:00-0400", "11-04 01:30:00-0500"],
        ),
        (
            "45 1 * * *",
            "Australia/Lord_Howe",
            utc(2024, 4, 5, 15),
            ["04-07 01:45:00+1100", "04-08 01:45:00+1030"],
        ),
        # Midnight itself is skipped in Havana and Santiago: @daily fires at 01:00 that day.
        (
            "@daily",
            "America/Havana",
            utc(2024, 3, 9, 6),
            ["03-10 01:00:00-0400", "03-11 00:00:00-0400"],
        ),
        (
            "@daily",
            "America/Santiago",
            utc(2024, 9, 7, 5),
            ["09-08 01:00:00-0300", "09-09 00:00:00-0300"],
        ),
        # Samoa skipped all of 2011-12-30: that day's noon fires when the gap ends, at midnight.
        (
            "0 12 * * *",
            "Pacific/Apia",
            utc(2011, 12, 29, 22),
            ["12-31 00:00:00+1400", "12-31 12:00:00+1400"],
        ),
    ],
)
def test_fixed_times_fire_once_per_day(
    expression: str, zone: str, after: datetime, expected: list[str]
) -> None:
    parsed = schedule.parse_schedule(expression, zone)
    found = [parsed.next_fire(after)]
    found.append(parsed.next_fire(found[0]))
    assert walls(found, zone) == expected


def test_fixed_time_not_fired_again_in_the_repeated_hour() -> None:
    parsed = schedule.parse_schedule("30 2 * * *", "Europe/Berlin")
    second_pass = utc(2024, 10, 27, 1, 15)  # 02:15 CET, after 02:30 CEST already fired
    assert parsed.next_fire(second_pass) == utc(2024, 10, 28, 1, 30)


def test_gap_tick_is_not_repeated_when_asked_from_it() -> None:
    parsed = schedule.parse_schedule("30 2 * * *", "Europe/Berlin")
    gap_tick = utc(2024, 3, 31, 1)
    assert parsed.next_fire(gap_tick - timedelta(seconds=1)) == gap_tick
    assert parsed.next_fire(gap_tick) == utc(2024, 4, 1, 0, 30)


@pytest.mark.parametrize(
    ("expression", "zone"),
    [
        ("30 2 * * *", "Europe/Berlin"),
        ("30 1 * * *", "America/New_York"),
        ("30 2 * * *", "America/New_York"),
        ("0 0 * * *", "America/Havana"),
        ("45 1 * * *", "Australia/Lord_Howe"),
        ("15 2 * * *", "Australia/Lord_Howe"),
    ],
)
def test_daily_fixed_time_fires_exactly_once_every_local_day_all_year(
    expression: str, zone: str
) -> None:
    found = fire_times(expression, zone, utc(2023, 12, 31, 12), utc(2024, 12, 31, 12))
    days = [tick.astimezone(ZoneInfo(zone)).date() for tick in found]
    assert len(days) == 366
    assert len(set(days)) == 366


@pytest.mark.parametrize(
    ("zone", "day"),
    [
        ("Europe/Berlin", utc(2024, 3, 31)),
        ("Europe/Berlin", utc(2024, 10, 27)),
        ("America/New_York", utc(2024, 3, 10, 4)),
        ("America/New_York", utc(2024, 11, 3, 3)),
        ("Australia/Lord_Howe", utc(2024, 10, 5, 13)),
        ("Australia/Lord_Howe", utc(2024, 4, 6, 13)),
        ("Asia/Kathmandu", utc(2024, 1, 1)),
    ],
)
@pytest.mark.parametrize("step", [1, 5, 15])
def test_interval_schedules_keep_their_real_time_cadence(
    zone: str, day: datetime, step: int
) -> None:
    found = fire_times(f"*/{step} * * * *", zone, day, day + timedelta(hours=6))
    assert len(found) == 6 * 60 // step
    assert {b - a for a, b in itertools.pairwise(found)} == {timedelta(minutes=step)}


def test_every_second_crosses_both_changes_without_a_hitch() -> None:
    parsed = schedule.parse_schedule("* * * * * *", "Europe/Berlin")
    for change in (utc(2024, 3, 31, 1), utc(2024, 10, 27, 1)):
        assert parsed.next_fire(change - timedelta(seconds=1)) == change
        assert parsed.next_fire(change) == change + timedelta(seconds=1)


def test_quarter_hours_through_berlin_spring_forward() -> None:
    found = fire_times(
        "*/15 * * * *", "Europe/Berlin", utc(2024, 3, 31, 0, 30), utc(2024, 3, 31, 1, 15)
    )
    assert walls(found, "Europe/Berlin") == [
        "03-31 01:45:00+0100",
        "03-31 03:00:00+0200",
        "03-31 03:15:00+0200",
    ]


def test_quarter_hours_repeat_in_new_york_fall_back() -> None:
    found = fire_times(
        "*/15 * * * *", "America/New_York", utc(2024, 11, 3, 5, 30), utc(2024, 11, 3, 6, 15)
    )
    assert walls(found, "America/New_York") == [
        "11-03 01:45:00-0400",
        "11-03 01:00:00-0500",
        "11-03 01:15:00-0500",
    ]


@pytest.mark.parametrize(
    ("zone", "after", "expected"),
    [
        # Hourly at :30 skips the hour that does not exist: still one real hour apart.
        ("Europe/Berlin", utc(2024, 3, 31, 0), ["03-31 01:30:00+0100", "03-31 03:30:00+0200"]),
        # ...and fires in both passes of the repeated hour.
        ("Europe/Berlin", utc(2024, 10, 27, 0), ["10-27 02:30:00+0200", "10-27 02:30:00+0100"]),
        ("America/New_York", utc(2024, 3, 10, 6), ["03-10 01:30:00-0500", "03-10 03:30:00-0400"]),
        ("America/New_York", utc(2024, 11, 3, 5), ["11-03 01:30:00-0400", "11-03 01:30:00-0500"]),
    ],
)
def test_hourly_keeps_one_real_hour(zone: str, after: datetime, expected: list[str]) -> None:
    found = fire_times("30 * * * *", zone, after, after + timedelta(hours=2))
    assert walls(found, zone) == expected
    assert found[1] - found[0] == timedelta(hours=1)


def test_two_hourly_matches_the_wall_clock_in_new_york() -> None:
    spring = fire_times("0 */2 * * *", "America/New_York", utc(2024, 3, 10, 4), utc(2024, 3, 10, 9))
    assert walls(spring, "America/New_York") == ["03-10 00:00:00-0500", "03-10 04:00:00-0400"]
    autumn = fire_times("0 */2 * * *", "America/New_York", utc(2024, 11, 3, 3), utc(2024, 11, 3, 8))
    assert walls(autumn, "America/New_York") == ["11-03 00:00:00-0400", "11-03 02:00:00-0500"]


def test_every_ignores_daylight_saving() -> None:
    found = fire_times("@every 30m", "Europe/Berlin", utc(2024, 3, 31, 0), utc(2024, 3, 31, 2))
    assert found == [
        utc(2024, 3, 31, 0, 30),
        utc(2024, 3, 31, 1),
        utc(2024, 3, 31, 1, 30),
        utc(2024, 3, 31, 2),
    ]


def test_zone_without_daylight_saving_is_a_fixed_offset() -> None:
    found = fire_times("0 9 * * *", "Asia/Tokyo", utc(2024, 1, 1), utc(2024, 1, 3))
    assert found == [utc(2024, 1, 2, 0), utc(2024, 1, 3, 0)]


def brute_force(expression: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """The rules restated naively, minute by minute over real time, as an independent oracle."""
    parsed = schedule.parse_schedule(expression, zone)
    fields = parsed.cron_fields
    assert fields is not None
    instants_of_wall: dict[datetime, list[datetime]] = {}
    instant = start
    while instant <= end:
        wall = instant.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
        instants_of_wall.setdefault(wall, []).append(instant)
        instant += timedelta(minutes=1)
    if not fields.wall_clock_fixed:
        return sorted(
            i for w, found in instants_of_wall.items() if fields.matches(w) for i in found
        )
    fired = set()
    first_wall, last_wall = min(instants_of_wall), max(instants_of_wall)
    wall = first_wall
    while wall <= last_wall:
        if fields.matches(wall):
            if wall in instants_of_wall:
                fired.add(instants_of_wall[wall][0])
            else:  # in a gap: the first real instant showing a later wall time
                fired.add(
                    min(i for w, found in instants_of_wall.items() if w > wall for i in found)
                )
        wall += timedelta(minutes=1)
    return sorted(fired)


@pytest.mark.parametrize(
    ("zone", "change"),
    [
        ("Europe/Berlin", utc(2024, 3, 31, 1)),
        ("Europe/Berlin", utc(2024, 10, 27, 1)),
        ("America/New_York", utc(2024, 3, 10, 7)),
        ("America/New_York", utc(2024, 11, 3, 6)),
        ("Australia/Lord_Howe", utc(2024, 10, 5, 15, 30)),
        ("Australia/Lord_Howe", utc(2024, 4, 6, 15)),
        ("America/Havana", utc(2024, 3, 10, 5)),
        ("Pacific/Apia", utc(2011, 12, 30, 10)),
    ],
)
@pytest.mark.parametrize(
    "expression",
    [
        "30 2 * * *",
        "45 1 * * *",
        "0,30 1-3 * * *",
        "0 0 * * *",
        "*/15 * * * *",
        "15,45 * * * *",
        "* 2 * * *",
        "*/20 1 * * *",
        "0 */2 * * *",
        "7 0-23/3 * * *",
    ],
)
def test_matches_a_brute_force_restatement_of_the_rules(
    expression: str, zone: str, change: datetime
) -> None:
    # Keep a day of margin inside the brute-force window so its edges cannot matter.
    start, end = change - timedelta(days=2), change + timedelta(days=2)
    expected = [
        t for t in brute_force(expression, zone, start, end) if abs(t - change) < timedelta(days=1)
    ]
    found = fire_times(expression, zone, change - timedelta(days=1), change + timedelta(days=1))
    found = [t for t in found if abs(t - change) < timedelta(days=1)]
    assert found == expected

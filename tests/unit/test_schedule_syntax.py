"""What a Task's schedule and timeZone accept, and how a mistake is reported."""

from __future__ import annotations

import pytest

from cadenza.core import cron, schedule


def fields(expression: str) -> cron.CronFields:
    parsed = schedule.parse_schedule(expression)
    assert parsed.cron_fields is not None
    return parsed.cron_fields


@pytest.mark.parametrize(
    ("expression", "attribute", "expected"),
    [
        ("*/15 * * * *", "minutes", (0, 15, 30, 45)),
        ("5-20/5 * * * *", "minutes", (5, 10, 15, 20)),
        ("50/5 * * * *", "minutes", (50, 55)),
        ("1,3,2,3 * * * *", "minutes", (1, 2, 3)),
        ("0 */6 * * *", "hours", (0, 6, 12, 18)),
        ("0 0 * JAN,mar,Dec *", "months", (1, 3, 12)),
        ("0 0 * * MON-FRI", "days_of_week", (1, 2, 3, 4, 5)),
        ("0 0 * * 5-7", "days_of_week", (0, 5, 6)),
        ("0 0 * * 7", "days_of_week", (0,)),
        ("0 0 * * sun,SAT", "days_of_week", (0, 6)),
        ("0 0 * * 1/2", "days_of_week", (1, 3, 5)),
        ("0 0 * * *", "seconds", (0,)),
        ("*/20 0 0 * * *", "seconds", (0, 20, 40)),
        ("7 1 2 * * *", "minutes", (1,)),
        ("7 1 2 * * *", "hours", (2,)),
        ("  0   0  *  *  *  ", "hours", (0,)),
        ("0\t0 * * *", "hours", (0,)),
    ],
)
def test_fields_expand(expression: str, attribute: str, expected: tuple[int, ...]) -> None:
    assert getattr(fields(expression), attribute) == expected


@pytest.mark.parametrize(
    ("expression", "dom_restricted", "dow_restricted"),
    [
        ("0 0 * * *", False, False),
        ("0 0 ? * *", False, False),
        ("0 0 * * ?", False, False),
        ("0 0 */1 * *", False, False),
        ("0 0 */2 * *", True, False),
        ("0 0 1 * MON", True, True),
        ("0 0 * * MON", False, True),
    ],
)
def test_day_fields_restriction_follows_robfig(
    expression: str, dom_restricted: bool, dow_restricted: bool
) -> None:
    parsed = fields(expression)
    assert parsed.day_of_month_restricted is dom_restricted
    assert parsed.day_of_week_restricted is dow_restricted


@pytest.mark.parametrize(
    ("expression", "fixed"),
    [
        ("30 2 * * *", True),
        ("0 9-17 * * 1-5", True),
        ("@daily", True),
        ("*/10 30 2 * * *", True),
        ("*/15 * * * *", False),
        ("30 * * * *", False),
        ("* 2 * * *", False),
        ("0 */2 * * *", False),
        ("@hourly", False),
        ("* * * * * *", False),
    ],
)
def test_wall_clock_kind_follows_vixie_cron(expression: str, fixed: bool) -> None:
    assert fields(expression).wall_clock_fixed is fixed


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        ("@every 1s", 1),
        ("@every 90s", 90),
        ("@every 1h30m", 5400),
        ("@every 30m1h", 5400),
        ("@every 1.5h", 5400),
        ("@every 2h", 7200),
        ("@every   45m", 2700),
        ("@every 1m0.5m", 90),
    ],
)
def test_every_durations(expression: str, seconds: int) -> None:
    assert schedule.parse_schedule(expression).every_seconds == seconds


@pytest.mark.parametrize(
    "macro",
    ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly", "@DAILY"],
)
def test_macros_parse(macro: str) -> None:
    assert schedule.parse_schedule(macro).cron_fields is not None


def test_parsing_is_deterministic_and_keeps_the_inputs() -> None:
    first = schedule.parse_schedule(" */5 * * * * ", "Europe/Berlin")
    assert first == schedule.parse_schedule("*/5 * * * *", "Europe/Berlin")
    assert first.expression == "*/5 * * * *"
    assert first.time_zone == "Europe/Berlin"


BAD_SCHEDULES = [
    ("", "must not be empty"),
    ("   ", "must not be empty"),
    ("* * * *", "4 fields given; expected 5"),
    ("* * * * * * *", "7 fields given; expected 5"),
    ("*", "1 field given"),
    ("60 * * * *", "minute value 60 out of range 0-59"),
    ("*/61 * * * *", "minute step 61 out of range 1-59"),
    ("*/0 * * * *", "minute step 0 out of range"),
    ("*/x * * * *", 'minute step "x" is not a whole number'),
    ("* 24 * * *", "hour value 24 out of range 0-23"),
    ("* * 0 * *", "day-of-month value 0 out of range 1-31"),
    ("* * 32 * *", "day-of-month value 32 out of range 1-31"),
    ("* * * 13 *", "month value 13 out of range 1-12"),
    ("* * * 0 *", "month value 0 out of range 1-12"),
    ("* * * * 8", "day-of-week value 8 out of range 0-7"),
    ("60 * * * * *", "second value 60 out of range 0-59"),
    ("a * * * *", 'minute value "a" is not a number 0-59'),
    ("JAN * * * *", 'minute value "JAN" is not a number'),
    ("* * * FOO *", "or a name JAN-DEC"),
    ("* * * * FUNDAY", "or a name SUN-SAT"),
    ("-1 * * * *", 'minute value "" is not a number'),
    ("5-1 * * * *", "minute range 5-1 is backwards"),
    ("1,,2 * * * *", "empty list element"),
    ("1, * * * *", "empty list element"),
    ("1/2/3 * * * *", "minute step"),
    ("? * * * *", "'?' is only allowed in day-of-month and day-of-week"),
    ("0 0 L * *", 'day-of-month value "L" is not a number'),
    ("0 0 * * 5#3", 'day-of-week value "5#3"'),
    ("0 0 30 2 *", "day-of-month 30 never occurs in FEB"),
    ("0 0 31 4,6,9,11 *", "never occurs in APR,JUN,SEP,NOV"),
    ("0 0 \uff13 * *", "is not a number"),  # a full-width digit
    ("TZ=UTC 0 0 * * *", "remove the TZ= prefix and set timeZone"),
    ("CRON_TZ=Europe/Berlin 0 0 * * *", "set timeZone"),
    ("@fortnightly", 'unknown macro "@fortnightly"'),
    ("@daily 5", "unknown macro"),
    ("@every", "has no duration"),
    ("@every 500ms", "below one second; the minimum interval is 1s"),
    ("@every 1500us", "below one second"),
    ("@every 0s", "shorter than the minimum interval of 1s"),
    ("@every 0.5s", "shorter than the minimum interval of 1s"),
    ("@every 1.5s", "not a whole number of seconds"),
    ("@every 1d", 'unknown unit "d"; use h, m or s'),
    ("@every abc", "not a valid duration"),
    ("@every 10", "not a valid duration"),
    ("@every -5s", "not a valid duration"),
    ("@every 5s 5s", "not a valid duration"),
]


@pytest.mark.parametrize(("expression", "message"), BAD_SCHEDULES)
def test_bad_schedules_name_the_field(expression: str, message: str) -> None:
    with pytest.raises(schedule.ScheduleError) as caught:
        schedule.parse_schedule(expression)
    assert caught.value.field == "schedule"
    assert str(caught.value).startswith("schedule: ")
    assert message in str(caught.value)


def test_cron_error_quotes_the_expression() -> None:
    with pytest.raises(schedule.ScheduleError) as caught:
        schedule.parse_schedule("*/61 * * * *")
    assert str(caught.value) == (
        'schedule: "*/61 * * * *" is not a valid cron expression: minute step 61 out of range 1-59'
    )


@pytest.mark.parametrize(
    ("time_zone", "message"),
    [
        ("Mars/Olympus", 'timeZone: "Mars/Olympus" is not a known IANA time zone'),
        ("Europe/Berln", 'did you mean "Europe/Berlin"?'),
        ("", "is not a known IANA time zone"),
        ("europe/berlin", "is not a known IANA time zone"),
        ("localtime", "is not a known IANA time zone"),
        ("../../etc/passwd", "is not a known IANA time zone"),
        ("+02:00", "is not a known IANA time zone"),
        (" UTC", "is not a known IANA time zone"),
    ],
)
def test_bad_time_zones_name_the_field(time_zone: str, message: str) -> None:
    with pytest.raises(schedule.ScheduleError) as caught:
        schedule.parse_schedule("0 0 * * *", time_zone)
    assert caught.value.field == "timeZone"
    assert message in str(caught.value)


def test_time_zone_is_checked_for_every_schedules_too() -> None:
    with pytest.raises(schedule.ScheduleError) as caught:
        schedule.parse_schedule("@every 1m", "Nowhere/Land")
    assert caught.value.field == "timeZone"


def test_schedule_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="schedule: "):
        schedule.parse_schedule("nonsense")

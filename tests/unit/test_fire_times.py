"""Fire times: the ticks a schedule yields, computed purely from the previous time."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from croniter import croniter

from cadenza.core import schedule


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def ticks(expression: str, after: datetime, count: int, zone: str = "UTC") -> list[datetime]:
    parsed = schedule.parse_schedule(expression, zone)
    found = []
    for _ in range(count):
        after = parsed.next_fire(after)
        found.append(after)
    return found


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("*/15 * * * *", utc(2024, 1, 1), [utc(2024, 1, 1, 0, 15), utc(2024, 1, 1, 0, 30)]),
        ("0 * * * *", utc(2024, 1, 1, 23, 30), [utc(2024, 1, 2), utc(2024, 1, 2, 1)]),
        ("59 23 31 12 *", utc(2024, 6, 1), [utc(2024, 12, 31, 23, 59), utc(2025, 12, 31, 23, 59)]),
        # The 31st skips the months that have 30 days or fewer.
        ("0 0 31 * *", utc(2024, 1, 31), [utc(2024, 3, 31), utc(2024, 5, 31), utc(2024, 7, 31)]),
        ("0 0 30 * *", utc(2024, 1, 30), [utc(2024, 3, 30), utc(2024, 4, 30)]),
        # Leap days: the next Feb 29, and 2100 is not a leap year.
        ("0 0 29 2 *", utc(2024, 2, 29), [utc(2028, 2, 29), utc(2032, 2, 29)]),
        ("0 0 29 2 *", utc(2096, 3, 1), [utc(2104, 2, 29)]),
        ("0 0 28-31 * *", utc(2023, 2, 27), [utc(2023, 2, 28), utc(2023, 3, 28)]),
        # Sunday is 0 and 7; 2024-01-07 is a Sunday.
        ("0 12 * * 0", utc(2024, 1, 1), [utc(2024, 1, 7, 12), utc(2024, 1, 14, 12)]),
        ("0 12 * * 7", utc(2024, 1, 1), [utc(2024, 1, 7, 12), utc(2024, 1, 14, 12)]),
        ("0 12 * * SUN", utc(2024, 1, 1), [utc(2024, 1, 7, 12)]),
        ("0 9 * * MON-FRI", utc(2024, 1, 5, 10), [utc(2024, 1, 8, 9), utc(2024, 1, 9, 9)]),
        ("0 0 * * 6,0", utc(2024, 1, 1), [utc(2024, 1, 6), utc(2024, 1, 7), utc(2024, 1, 13)]),
        # Both day fields restricted: either matches (Jan 1 and 8 are Mondays, 15 is both).
        ("0 0 1,15 * MON", utc(2024, 1, 1), [utc(2024, 1, 8), utc(2024, 1, 15), utc(2024, 1, 22)]),
        # A stepped day-of-month is restricted too (robfig): 2nd, 4th... OR Sundays.
        ("0 0 2/2 * 0", utc(2024, 1, 1), [utc(2024, 1, 2), utc(2024, 1, 4), utc(2024, 1, 6)]),
        ("0 0 */2 * *", utc(2024, 1, 31), [utc(2024, 2, 1), utc(2024, 2, 3)]),
        ("0 0 * FEB *", utc(2024, 3, 1), [utc(2025, 2, 1), utc(2025, 2, 2)]),
        # Six fields put seconds first.
        ("*/10 * * * * *", utc(2024, 1, 1), [utc(2024, 1, 1, 0, 0, 10), utc(2024, 1, 1, 0, 0, 20)]),
        (
            "30 0 12 * * *",
            utc(2024, 1, 1),
            [utc(2024, 1, 1, 12, 0, 30), utc(2024, 1, 2, 12, 0, 30)],
        ),
        ("* * * * * *", utc(2024, 1, 1, 23, 59, 59), [utc(2024, 1, 2), utc(2024, 1, 2, 0, 0, 1)]),
        ("0 0 0 1 1 *", utc(2024, 1, 1), [utc(2025, 1, 1)]),
        ("@yearly", utc(2024, 1, 1), [utc(2025, 1, 1)]),
        ("@annually", utc(2024, 5, 1), [utc(2025, 1, 1)]),
        ("@monthly", utc(2024, 1, 31), [utc(2024, 2, 1), utc(2024, 3, 1)]),
        ("@weekly", utc(2024, 1, 1), [utc(2024, 1, 7), utc(2024, 1, 14)]),
        ("@daily", utc(2024, 2, 28, 1), [utc(2024, 2, 29), utc(2024, 3, 1)]),
        ("@midnight", utc(2024, 12, 31, 0, 0, 1), [utc(2025, 1, 1)]),
        ("@hourly", utc(2024, 1, 1, 0, 0, 1), [utc(2024, 1, 1, 1), utc(2024, 1, 1, 2)]),
    ],
)
def test_next_fire_in_utc(expression: str, after: datetime, expected: list[datetime]) -> None:
    assert ticks(expression, after, len(expected)) == expected


@pytest.mark.parametrize("expression", ["@every 90s", "@every 1h30m", "@every 7s", "@every 1h"])
@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "Asia/Kolkata"])
def test_every_ticks_are_multiples_of_the_period_since_the_unix_epoch(
    expression: str, zone: str
) -> None:
    parsed = schedule.parse_schedule(expression, zone)
    assert parsed.every_seconds is not None
    after = utc(2024, 3, 31, 0, 59, 58)
    found = parsed.fire_times(after, after + timedelta(hours=5), 100)
    assert found
    for tick in found:
        assert int(tick.timestamp()) % parsed.every_seconds == 0
    gaps = {b - a for a, b in itertools.pairwise(found)}
    assert gaps <= {timedelta(seconds=parsed.every_seconds)}
    assert found[0] - after <= timedelta(seconds=parsed.every_seconds)


def test_every_before_the_epoch_still_lands_on_the_grid() -> None:
    parsed = schedule.parse_schedule("@every 7s")
    assert parsed.next_fire(utc(1969, 12, 31, 23, 59, 50)) == utc(1969, 12, 31, 23, 59, 53)


def test_next_fire_is_strictly_after() -> None:
    parsed = schedule.parse_schedule("*/5 * * * *")
    tick = utc(2024, 1, 1, 0, 5)
    assert parsed.next_fire(tick) == utc(2024, 1, 1, 0, 10)
    assert parsed.next_fire(tick - timedelta(microseconds=1)) == tick
    every = schedule.parse_schedule("@every 60s")
    assert every.next_fire(tick) == tick + timedelta(minutes=1)
    assert every.next_fire(tick - timedelta(microseconds=1)) == tick


def test_fractional_after_rounds_to_whole_second_ticks() -> None:
    parsed = schedule.parse_schedule("* * * * * *")
    tick = parsed.next_fire(utc(2024, 1, 1) + timedelta(microseconds=500_000))
    assert tick == utc(2024, 1, 1, 0, 0, 1)
    assert tick.microsecond == 0


def test_next_fire_accepts_any_aware_datetime_and_returns_utc() -> None:
    parsed = schedule.parse_schedule("0 12 * * *")
    after = datetime(2024, 1, 1, 13, 0, tzinfo=timezone(timedelta(hours=5)))  # 08:00 UTC
    tick = parsed.next_fire(after)
    assert tick == utc(2024, 1, 1, 12)
    assert tick.tzinfo is UTC


def test_next_fire_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="aware"):
        schedule.parse_schedule("* * * * *").next_fire(datetime(2024, 1, 1))


def test_same_input_same_tick_across_parses() -> None:
    after = utc(2024, 7, 1, 3, 4, 5)
    results = {
        schedule.parse_schedule("*/7 3 * * *", "America/New_York").next_fire(after)
        for _ in range(5)
    }
    assert len(results) == 1


def test_a_shared_schedule_answers_each_caller_as_a_fresh_one_would() -> None:
    """Tasks on one expression share one parsed schedule, which remembers its last answer."""
    shared = schedule.parse_schedule("*/7 * * * * *", "Europe/Berlin")
    start = datetime(2026, 3, 29, 0, 59, 50, tzinfo=UTC)  # across the spring-forward change
    asked = [start + timedelta(seconds=s) for s in (0, 0, 3, 0, 3, 9, 9, 9, 30)]
    asked += [a + timedelta(milliseconds=400) for a in asked]
    for after in asked:
        fresh = schedule.Schedule(shared.expression, shared.time_zone, shared.zone,
                                  shared.cron_fields)  # fmt: skip
        assert shared.next_fire(after) == fresh.next_fire(after), after
    assert shared == fresh and hash(shared) == hash(fresh)  # the memory is not the value


def test_fire_times_window_and_limit() -> None:
    parsed = schedule.parse_schedule("0 * * * *")
    after, until = utc(2024, 1, 1), utc(2024, 1, 1, 5)
    assert parsed.fire_times(after, until, 100) == [utc(2024, 1, 1, h) for h in range(1, 6)]
    assert parsed.fire_times(after, until, 2) == [utc(2024, 1, 1, 1), utc(2024, 1, 1, 2)]
    assert parsed.fire_times(after, until, 0) == []
    assert parsed.fire_times(until, after, 10) == []
    with pytest.raises(ValueError, match="limit"):
        parsed.fire_times(after, until, -1)


def _random_field(rng: random.Random, low: int, high: int) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        return "*"
    if kind == 1:
        return f"*/{rng.randint(2, max(2, (high - low) // 2))}"
    if kind == 2:
        # Not a one-value range such as 17-17: croniter 7 mis-reads it in day-of-month.
        a = rng.randint(low, high - 1)
        b = rng.randint(a + 1, high)
        return f"{a}-{b}"
    if kind == 3:
        return ",".join(str(v) for v in sorted(rng.sample(range(low, high + 1), 3)))
    return str(rng.randint(low, high))


def _random_expression(rng: random.Random) -> str:
    day_of_month = _random_field(rng, 1, 28)
    day_of_week = _random_field(rng, 0, 6)
    if rng.random() < 0.7:
        # croniter and robfig read a stepped day field differently; keep one side plain.
        day_of_week = "*"
    return " ".join(
        [
            _random_field(rng, 0, 59),
            _random_field(rng, 0, 23),
            day_of_month,
            _random_field(rng, 1, 12),
            day_of_week,
        ]
    )


def test_agrees_with_croniter_in_utc() -> None:
    # croniter is a reference implementation for plain UTC cron; this guards the hand-written
    # matcher against off-by-one errors in field expansion and day arithmetic.
    rng = random.Random(20240229)
    for _ in range(400):
        expression = _random_expression(rng)
        start = utc(2023, 1, 1) + timedelta(seconds=rng.randrange(3 * 365 * 86400))
        reference = croniter(expression, start)
        ours = schedule.parse_schedule(expression)
        after = start
        for _ in range(5):
            after = ours.next_fire(after)
            assert after == reference.get_next(datetime), expression


def test_seconds_first_agrees_with_croniter_seconds_last() -> None:
    for seconds_field in ["*/10", "5,35", "59", "0-4"]:
        ours = schedule.parse_schedule(f"{seconds_field} */2 * * * *")
        reference = croniter(f"*/2 * * * * {seconds_field}", utc(2024, 1, 1))
        after = utc(2024, 1, 1)
        for _ in range(20):
            after = ours.next_fire(after)
            assert after == reference.get_next(datetime)

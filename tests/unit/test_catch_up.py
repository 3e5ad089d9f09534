"""Catch-up after a long outage or a clock jump: the same ticks fire as if every missed tick had
been walked, but the work per Task is bounded (counted by the fire times computed)."""

from __future__ import annotations

import bisect
import dataclasses
import functools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cadenza.core import misfire
from cadenza.core.misfire import MisfirePolicy, catch_up, latest_ticks, plan_misfires
from cadenza.core.schedule import Schedule, parse_schedule
from cadenza.kube.views import TaskView
from cadenza.scheduling.misfires import missed_ticks
from cadenza.scheduling.plans import TaskPlan, plan_of

NOW = datetime(2026, 3, 29, 1, 30, 17, 250_000, tzinfo=UTC)  # a DST change in Europe that night
DAY = 86_400

SCHEDULES = [
    ("* * * * * *", "UTC"),  # every second
    ("*/7 * * * * *", "UTC"),
    ("0 * * * *", "UTC"),
    ("30 2 * * *", "Europe/Berlin"),  # 02:30 does not exist on the night of NOW
    ("* 9-10 * * 1-5", "America/New_York"),  # dense in business hours, none at night
    ("0 0 1 1 *", "UTC"),  # once a year: nothing in a day's window
    ("@every 90s", "UTC"),
]


class Counting:
    """A schedule that counts the fire times asked of it."""

    def __init__(self, schedule: Schedule) -> None:
        self._schedule = schedule
        self.asked = 0

    def fire_times(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        found = self._schedule.fire_times(after, until, limit)
        self.asked += len(found) + 1
        return found


def walked(schedule: Schedule, start: datetime, now: datetime) -> list[datetime]:
    return schedule.fire_times(start, now, 10 * DAY)


@functools.cache
def walked_before_now(expression: str, zone: str, start: datetime) -> list[datetime]:
    """Every tick after ``start`` until NOW, walked once per schedule and start (the examples
    of one schedule share it: a second-schedule's three days are 259,200 ticks)."""
    return walked(parse_schedule(expression, zone), start, NOW)


def walked_after(index: int, after: datetime) -> list[datetime]:
    """The walk from ``after`` (at most three days before NOW), cut from the one walk of the
    three days (ticks are strictly after their start)."""
    every = walked_before_now(*SCHEDULES[index], NOW - timedelta(seconds=3 * DAY))
    return every[bisect.bisect_right(every, after) :]


@pytest.mark.parametrize(("expression", "zone"), SCHEDULES)
@pytest.mark.parametrize("policy", list(MisfirePolicy))
@pytest.mark.parametrize("outage", [5, 600, DAY, 7 * DAY])
def test_the_same_ticks_fire_as_when_every_missed_tick_is_walked(
    expression: str, zone: str, policy: MisfirePolicy, outage: int
) -> None:
    schedule = parse_schedule(expression, zone)
    last = NOW - timedelta(seconds=outage)
    window = 3 * DAY
    start = max(last, NOW - timedelta(seconds=window))
    every = walked_before_now(expression, zone, start)
    counting = Counting(schedule)
    got = catch_up(counting, last, NOW, policy, None, 10, window)  # type: ignore[arg-type]
    assert got.fire == plan_misfires(every, NOW, policy, None, 10)
    if got.exact:
        assert got.missed == len(every)
    else:
        assert len(every) > misfire.COUNT_LIMIT == got.missed - 1
    # Bounded: counting, then about 40 doublings or bisections of a few dozen ticks each.
    assert counting.asked <= misfire.COUNT_LIMIT + 2 + 45 * (4 * 10 + 17)


@settings(max_examples=200, deadline=None)
@given(
    index=st.integers(0, len(SCHEDULES) - 1),
    back=st.integers(0, 3 * DAY),
    n=st.integers(1, 20),
)
def test_latest_ticks_are_the_last_n_of_the_walk(index: int, back: int, n: int) -> None:
    schedule = parse_schedule(*SCHEDULES[index])
    after = NOW - timedelta(seconds=back)
    assert latest_ticks(schedule, after, NOW, n) == walked_after(index, after)[-n:]


def test_a_starting_deadline_still_limits_what_fires() -> None:
    schedule = parse_schedule("* * * * * *")
    got = catch_up(schedule, NOW - timedelta(days=1), NOW, MisfirePolicy.FIRE_ALL, 3, 10, DAY)
    # Inclusive, as in a CronJob: now - tick <= 3 s, with now at .25 s past the second.
    assert got.fire == [NOW.replace(microsecond=0) - timedelta(seconds=s) for s in (2, 1, 0)]


def plan(name: str, expression: str, policy: str = "FireAll") -> TaskPlan:
    spec = {
        "schedule": expression,
        "executors": [{"name": "workers"}],
        "misfirePolicy": policy,
        "maxMisfireRuns": 3,
    }
    return plan_of(TaskView.of(f"uid-{name}", "ns", name, 1, spec))


class Broken:
    def fire_times(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        raise RuntimeError("a schedule that cannot compute")


def test_a_task_whose_catch_up_fails_is_skipped_alone() -> None:
    good, bad = plan("good", "* * * * * *"), plan("bad", "* * * * * *")
    bad = dataclasses.replace(bad, schedule=Broken())  # type: ignore[arg-type]
    idle = plan("idle", "0 0 1 1 *")
    last = {p.uid: NOW - timedelta(days=2) for p in (good, bad, idle)}
    found = missed_ticks([bad, good, idle], last, NOW)
    assert [m.plan.name for m in found] == ["good"]  # idle missed nothing: not reported
    (missed,) = found
    assert len(missed.catch_up.fire) == 3 and missed.describe() == "missed more than 100 ticks"
    assert missed.dropped == misfire.COUNT_LIMIT + 1 - 3

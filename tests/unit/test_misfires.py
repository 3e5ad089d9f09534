"""Misfires: which ticks missed while no leader ran still fire on takeover."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cadenza.core.misfire import MisfirePolicy, plan_misfires

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def ago(*minutes: int) -> list[datetime]:
    return [NOW - timedelta(minutes=m) for m in minutes]


MISSED = ago(50, 40, 30, 20, 10, 0)


@pytest.mark.parametrize(
    ("policy", "deadline", "cap", "expected"),
    [
        (MisfirePolicy.SKIP, None, 10, []),
        (MisfirePolicy.SKIP, 3600, 10, []),
        (MisfirePolicy.FIRE_ONCE, None, 10, ago(0)),
        (MisfirePolicy.FIRE_ONCE, 15 * 60, 10, ago(0)),
        (MisfirePolicy.FIRE_ALL, None, 10, ago(50, 40, 30, 20, 10, 0)),
        (MisfirePolicy.FIRE_ALL, None, 2, ago(10, 0)),
        (MisfirePolicy.FIRE_ALL, 25 * 60, 10, ago(20, 10, 0)),
        (MisfirePolicy.FIRE_ALL, 20 * 60, 10, ago(20, 10, 0)),  # the deadline is inclusive
        (MisfirePolicy.FIRE_ALL, 20 * 60 - 1, 10, ago(10, 0)),
        (MisfirePolicy.FIRE_ALL, 25 * 60, 1, ago(0)),
        (MisfirePolicy.FIRE_ALL, 0, 10, ago(0)),
    ],
)
def test_plan(
    policy: MisfirePolicy, deadline: int | None, cap: int, expected: list[datetime]
) -> None:
    assert plan_misfires(MISSED, NOW, policy, deadline, cap) == expected


def test_fire_once_takes_the_latest_within_the_deadline() -> None:
    missed = ago(50, 40, 30)
    assert plan_misfires(missed, NOW, MisfirePolicy.FIRE_ONCE, 45 * 60, 5) == ago(30)
    assert plan_misfires(missed, NOW, MisfirePolicy.FIRE_ONCE, 20 * 60, 5) == []


def test_nothing_missed_nothing_planned() -> None:
    for policy in MisfirePolicy:
        assert plan_misfires([], NOW, policy, None, 5) == []


def test_input_order_duplicates_and_future_ticks_do_not_matter() -> None:
    messy = [*ago(10, 30), *ago(10, 20), NOW + timedelta(minutes=1)]
    assert plan_misfires(messy, NOW, MisfirePolicy.FIRE_ALL, None, 10) == ago(30, 20, 10)
    assert plan_misfires(messy, NOW, MisfirePolicy.FIRE_ONCE, None, 10) == ago(10)


def test_planning_is_pure() -> None:
    first = plan_misfires(MISSED, NOW, MisfirePolicy.FIRE_ALL, 3600, 3)
    assert first == plan_misfires(MISSED, NOW, MisfirePolicy.FIRE_ALL, 3600, 3)
    assert ago(50, 40, 30, 20, 10, 0) == MISSED


@pytest.mark.parametrize(("deadline", "cap"), [(None, 0), (-1, 5)])
def test_refuses_bad_limits(deadline: int | None, cap: int) -> None:
    with pytest.raises(ValueError):
        plan_misfires(MISSED, NOW, MisfirePolicy.FIRE_ALL, deadline, cap)


def test_refuses_naive_now() -> None:
    with pytest.raises(ValueError, match="aware"):
        plan_misfires(MISSED, NOW.replace(tzinfo=None), MisfirePolicy.FIRE_ALL, None, 5)


def test_policies_are_the_crd_spellings() -> None:
    assert [p.value for p in MisfirePolicy] == ["Skip", "FireOnce", "FireAll"]

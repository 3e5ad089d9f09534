"""Pod health: probe results folded into a verdict with failure and success thresholds."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest

from cadenza.core.health import INITIAL, HealthThresholds, PodHealth, observe

T0 = datetime(2024, 1, 1, tzinfo=UTC)
THRESHOLDS = HealthThresholds(failure_threshold=3, success_threshold=2)


def replay(results: Iterable[bool], start: PodHealth = INITIAL) -> list[PodHealth]:
    health, history = start, []
    for index, ok in enumerate(results):
        health = observe(health, ok, T0 + timedelta(seconds=index), THRESHOLDS, error="boom")
        history.append(health)
    return history


def verdicts(results: str) -> str:
    """'+' success, '-' failure -> 'H' healthy, 'u' unhealthy after each probe."""
    return "".join("H" if h.healthy else "u" for h in replay(c == "+" for c in results))


def test_a_new_pod_is_not_healthy_until_probed() -> None:
    assert INITIAL.healthy is False
    assert INITIAL.last_probe_at is None


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ("+", "H"),  # the first success is enough for a pod that has never failed over
        ("-+", "uH"),  # nor for one that has never been healthy
        ("---+", "uuuH"),
        ("+--", "HHH"),  # two failures stay under the threshold of three
        ("+---", "HHHu"),
        ("+--+--", "HHHHHH"),  # a success in between resets the failure count
        ("+---+", "HHHuu"),  # recovery needs two successes in a row
        ("+---++", "HHHuuH"),
        ("+---+-+", "HHHuuuu"),  # a failure in between restarts the recovery
        ("+---+-++", "HHHuuuuH"),
        ("+---++---++", "HHHuuHHHuuH"),
    ],
)
def test_thresholds(results: str, expected: str) -> None:
    assert verdicts(results) == expected


def test_counts_and_errors_are_tracked() -> None:
    last = replay([True, False, False])[-1]
    assert (last.consecutive_failures, last.consecutive_successes) == (2, 0)
    assert last.last_error == "boom"
    assert last.last_probe_at == T0 + timedelta(seconds=2)
    recovered = replay([True])[-1]
    assert (recovered.consecutive_failures, recovered.consecutive_successes) == (0, 1)
    assert recovered.last_error is None


def test_failure_without_a_message_still_records_an_error() -> None:
    health = observe(INITIAL, False, T0, THRESHOLDS)
    assert health.last_error == "probe failed"


def test_thresholds_of_one_flip_immediately() -> None:
    strict = HealthThresholds(1, 1)
    health = observe(INITIAL, True, T0, strict)
    health = observe(health, False, T0 + timedelta(seconds=1), strict)
    assert health.healthy is False
    health = observe(health, True, T0 + timedelta(seconds=2), strict)
    assert health.healthy is True


def test_an_older_observation_is_ignored() -> None:
    health = observe(INITIAL, True, T0 + timedelta(seconds=10), THRESHOLDS)
    assert observe(health, False, T0, THRESHOLDS) is health
    same_time = observe(health, False, T0 + timedelta(seconds=10), THRESHOLDS)
    assert same_time.consecutive_failures == 1


def test_observe_is_pure() -> None:
    before = replay([True, False])[-1]
    observe(before, False, T0 + timedelta(minutes=1), THRESHOLDS)
    assert before.consecutive_failures == 1


@pytest.mark.parametrize(("failures", "successes"), [(0, 1), (1, 0), (-1, 2)])
def test_thresholds_must_be_positive(failures: int, successes: int) -> None:
    with pytest.raises(ValueError):
        HealthThresholds(failures, successes)

"""Retry backoff: exponential, capped, jittered within bounds, and finite."""

from __future__ import annotations

import random

import pytest

from cadenza.core.retry import NO_RETRY, RetryPolicy, retry_delay

POLICY = RetryPolicy(max_attempts=6, backoff_seconds=10, max_backoff_seconds=100)


def test_attempts_are_exhausted_at_max_attempts() -> None:
    rng = random.Random(1)
    assert [retry_delay(POLICY, n, rng) is None for n in range(1, 8)] == [
        False,
        False,
        False,
        False,
        False,
        True,
        True,
    ]
    assert retry_delay(NO_RETRY, 1, rng) is None


def test_without_jitter_the_delay_doubles_up_to_the_cap() -> None:
    exact = RetryPolicy(max_attempts=7, backoff_seconds=10, max_backoff_seconds=100, jitter=0)
    rng = random.Random(1)
    assert [retry_delay(exact, n, rng) for n in range(1, 7)] == [10, 20, 40, 80, 100, 100]


def test_multiplier_one_is_constant() -> None:
    constant = RetryPolicy(4, 5, 60, multiplier=1, jitter=0)
    assert [retry_delay(constant, n, random.Random(0)) for n in (1, 2, 3)] == [5, 5, 5]


@pytest.mark.parametrize("jitter", [0.0, 0.2, 0.5, 1.0])
@pytest.mark.parametrize("multiplier", [1.0, 1.5, 2.0, 3.0])
def test_jittered_delays_stay_within_bounds(jitter: float, multiplier: float) -> None:
    policy = RetryPolicy(50, 2, 30, multiplier=multiplier, jitter=jitter)
    rng = random.Random(42)
    for attempt in range(1, 50):
        base = min(2 * multiplier ** (attempt - 1), 30)
        for _ in range(50):
            delay = retry_delay(policy, attempt, rng)
            assert delay is not None
            assert 0 <= delay <= 30
            assert base * (1 - jitter) - 1e-9 <= delay <= min(base * (1 + jitter), 30) + 1e-9


def test_jitter_spreads_the_delays() -> None:
    rng = random.Random(7)
    delays = [retry_delay(POLICY, 2, rng) for _ in range(2000)]
    assert all(d is not None and 16 <= d <= 24 for d in delays)
    assert len({round(d or 0, 3) for d in delays}) > 1000
    mean = sum(d or 0 for d in delays) / len(delays)
    assert 19.5 < mean < 20.5


def test_at_the_cap_delays_spread_below_it_instead_of_piling_on_it() -> None:
    rng = random.Random(3)
    delays = [retry_delay(POLICY, 5, rng) or 0 for _ in range(1000)]
    assert all(80 <= d <= 100 for d in delays)
    assert sum(d == 100 for d in delays) <= 1


def test_huge_attempt_numbers_do_not_overflow() -> None:
    policy = RetryPolicy(10**9, 1, 3600, multiplier=10)
    delay = retry_delay(policy, 10**8, random.Random(0))
    assert delay is not None and delay <= 3600


def test_zero_backoff_retries_immediately() -> None:
    policy = RetryPolicy(3, 0, 0)
    assert retry_delay(policy, 1, random.Random(0)) == 0


def test_seeded_rng_makes_delays_reproducible() -> None:
    first = [retry_delay(POLICY, n, random.Random(99)) for n in range(1, 6)]
    assert first == [retry_delay(POLICY, n, random.Random(99)) for n in range(1, 6)]


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="attempt"):
        retry_delay(POLICY, 0, random.Random(0))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0, "backoff_seconds": 1, "max_backoff_seconds": 2},
        {"max_attempts": 3, "backoff_seconds": -1, "max_backoff_seconds": 2},
        {"max_attempts": 3, "backoff_seconds": 5, "max_backoff_seconds": 2},
        {"max_attempts": 3, "backoff_seconds": 1, "max_backoff_seconds": float("inf")},
        {"max_attempts": 3, "backoff_seconds": 1, "max_backoff_seconds": 2, "multiplier": 0.5},
        {"max_attempts": 3, "backoff_seconds": 1, "max_backoff_seconds": 2, "jitter": -0.1},
        {"max_attempts": 3, "backoff_seconds": 1, "max_backoff_seconds": 2, "jitter": 1.5},
        {"max_attempts": 3, "backoff_seconds": float("nan"), "max_backoff_seconds": 2},
    ],
)
def test_policy_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]

"""A replica whose leader work failed waits before it campaigns again, so another replica gets
the lock first: longer with each failure in a row, and from the start after a healthy term."""

from __future__ import annotations

from cadenza.leadership import StepDowns


def test_failures_in_a_row_double_the_cooldown_up_to_a_minute() -> None:
    downs = StepDowns()
    assert [downs.after_failure(1.0) for _ in range(7)] == [2, 4, 8, 16, 32, 60, 60]


def test_a_healthy_term_starts_the_cooldown_over() -> None:
    downs = StepDowns(healthy_term=60.0)
    for _ in range(6):
        downs.after_failure(1.0)
    assert downs.after_failure(59.0) == 60
    assert downs.after_failure(60.0) == 2
    assert downs.after_failure(600.0) == 2
    assert downs.after_failure(0.5) == 4

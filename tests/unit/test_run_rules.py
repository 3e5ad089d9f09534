"""The run rules: what happens next to a run after a pod's answer, a callback, a deadline or a
takeover — one pure decision that the leader and the callback API both take."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from cadenza.core import runs as rules
from cadenza.core.changes import ChangeCursor
from cadenza.core.retry import NO_RETRY, RetryPolicy
from cadenza.core.transitions import RESULTS, TERMINAL, RunStatus

S = RunStatus
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
THREE = RetryPolicy(max_attempts=3, backoff_seconds=10, max_backoff_seconds=60, jitter=0)
FAILED = rules.Outcome(S.FAILED, error="exit 1")


def rng() -> random.Random:
    return random.Random(7)


@pytest.mark.parametrize("status", [S.FAILED, S.TIMED_OUT, S.LOST])
def test_a_bad_attempt_is_retried_while_attempts_are_left(status: RunStatus) -> None:
    outcome = rules.Outcome(status)
    first = rules.after_bad_attempt(THREE, 1, outcome, NOW, rng())
    second = rules.after_bad_attempt(THREE, 2, outcome, NOW, rng())
    last = rules.after_bad_attempt(THREE, 3, outcome, NOW, rng())
    assert first == rules.Retry(outcome, NOW + timedelta(seconds=10))
    assert second == rules.Retry(outcome, NOW + timedelta(seconds=20))
    assert last == rules.Finish(outcome)


def test_without_a_retry_policy_the_first_bad_attempt_ends_the_run() -> None:
    assert rules.after_bad_attempt(NO_RETRY, 1, FAILED, NOW, rng()) == rules.Finish(FAILED)


def test_a_run_that_may_not_reopen_is_finished() -> None:
    assert rules.after_bad_attempt(THREE, 1, FAILED, NOW, rng(), reopen=False) == rules.Finish(
        FAILED
    )


@pytest.mark.parametrize("current", [S.CLAIMED, S.DISPATCHED, S.RUNNING])
def test_a_failed_report_of_an_active_run_is_retried(current: RunStatus) -> None:
    decision = rules.after_report(current, FAILED, THREE, 1, NOW, rng())
    assert isinstance(decision, rules.Retry)


def test_a_lost_run_is_corrected_but_never_reopened() -> None:
    assert rules.after_report(S.LOST, FAILED, THREE, 1, NOW, rng()) == rules.Finish(FAILED)
    ok = rules.Outcome(S.SUCCEEDED)
    assert rules.after_report(S.LOST, ok, THREE, 1, NOW, rng()) == rules.Finish(ok)


@pytest.mark.parametrize("current", [*sorted(TERMINAL - {S.LOST}), S.QUEUED])
@pytest.mark.parametrize("reported", sorted(RESULTS))
def test_a_report_for_a_finished_or_waiting_run_is_ignored(
    current: RunStatus, reported: RunStatus
) -> None:
    assert rules.after_report(current, rules.Outcome(reported), THREE, 1, NOW, rng()) is None


@pytest.mark.parametrize("reported", [S.SUCCEEDED, S.CANCELLED])
def test_a_good_or_cancelled_report_finishes(reported: RunStatus) -> None:
    outcome = rules.Outcome(reported)
    assert rules.after_report(S.RUNNING, outcome, THREE, 1, NOW, rng()) == rules.Finish(outcome)


def test_a_callback_carries_a_final_status_only() -> None:
    with pytest.raises(ValueError, match="callback"):
        rules.after_report(S.RUNNING, rules.Outcome(S.RUNNING), THREE, 1, NOW, rng())


@pytest.mark.parametrize(
    ("answer", "after"),
    [
        (rules.Answer.STARTED, rules.AfterAnswer.RUNNING),
        (rules.Answer.MAYBE_STARTED, rules.AfterAnswer.RUNNING),
        (rules.Answer.BUSY, rules.AfterAnswer.NEXT_POD),
        (rules.Answer.DRAINING, rules.AfterAnswer.NEXT_POD),
        (rules.Answer.UNREACHABLE, rules.AfterAnswer.NEXT_POD),
        (rules.Answer.POD_REFUSED, rules.AfterAnswer.NEXT_POD),
        (rules.Answer.MALFORMED, rules.AfterAnswer.END_ATTEMPT),
    ],
)
def test_what_a_pods_answer_leads_to(answer: rules.Answer, after: rules.AfterAnswer) -> None:
    assert rules.after_answer(answer) is after


def test_every_answer_has_a_rule() -> None:
    for answer in rules.Answer:
        assert isinstance(rules.after_answer(answer), rules.AfterAnswer)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("running", None),
        ("succeeded", S.SUCCEEDED),
        ("failed", S.FAILED),
        ("timed_out", S.TIMED_OUT),
        ("cancelled", S.CANCELLED),
        ("skipped", None),
        ("nonsense", None),
    ],
)
def test_what_a_pods_run_view_says(state: str, expected: RunStatus | None) -> None:
    outcome = rules.after_pod_view(state, {"state": state, "error": "e", "exitCode": 3})
    assert (outcome.status if outcome else None) is expected
    if outcome is not None:
        assert (outcome.error, outcome.exit_code) == ("e", 3)


def test_where_an_attempt_may_end_from() -> None:
    assert rules.sources_of(S.LOST) == rules.OPEN
    assert rules.sources_of(S.CANCELLED, by_leader=True) == rules.OPEN
    assert S.QUEUED not in rules.sources_of(S.CANCELLED)
    assert rules.sources_of(S.SUCCEEDED) == frozenset({S.CLAIMED, S.DISPATCHED, S.RUNNING, S.LOST})
    with pytest.raises(ValueError, match="not how an attempt ends"):
        rules.sources_of(S.SKIPPED)


# -- the change cursor the leader reads callbacks' changes with -------------------------------


def test_the_change_cursor_reports_each_change_once_and_waits_for_late_commits() -> None:
    cursor = ChangeCursor(high=10, gap_timeout=5)
    assert cursor.saw([11, 12, 14], now=0) == [11, 12, 14]
    assert cursor.wanted() == (14, [13])
    # 13 commits late: still reported, once.
    assert cursor.saw([13, 14], now=1) == [13]
    assert cursor.saw([13], now=1) == []
    assert cursor.wanted() == (14, [])


def test_a_gap_that_never_fills_is_given_up() -> None:
    cursor = ChangeCursor(high=0, gap_timeout=5)
    cursor.saw([3], now=0)
    assert cursor.wanted() == (3, [1, 2])
    cursor.saw([], now=6)
    assert cursor.wanted() == (3, [])


def test_a_pods_run_view_keeps_the_pods_own_times() -> None:
    view = {
        "state": "succeeded",
        "startedAt": "2026-12-02T12:00:00.125Z",
        "finishedAt": "2026-12-02T12:00:03.5+00:00",
    }
    outcome = rules.after_pod_view("succeeded", view)
    assert outcome is not None
    assert outcome.started_at == datetime(2026, 12, 2, 12, 0, 0, 125000, tzinfo=UTC)
    assert outcome.finished_at == datetime(2026, 12, 2, 12, 0, 3, 500000, tzinfo=UTC)
    odd = rules.after_pod_view("failed", {"startedAt": "yesterday", "finishedAt": 5})
    assert odd is not None and (odd.started_at, odd.finished_at) == (None, None)

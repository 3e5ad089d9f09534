"""Run transitions: which status changes are allowed and how sidecar callbacks apply."""

from __future__ import annotations

import itertools

import pytest

from cadenza.core.transitions import (
    ACTIVE,
    REPORTABLE,
    RESULTS,
    TERMINAL,
    RunStatus,
    apply_callback,
    can_transition,
    is_terminal,
)

S = RunStatus
C, Q, D, R = S.CLAIMED, S.QUEUED, S.DISPATCHED, S.RUNNING
OK, FAIL, TIMEOUT, CANCEL, SKIP, LOST = (
    S.SUCCEEDED,
    S.FAILED,
    S.TIMED_OUT,
    S.CANCELLED,
    S.SKIPPED,
    S.LOST,
)

# Every allowed move; everything else is refused.
ALLOWED: dict[RunStatus, set[RunStatus]] = {
    C: {Q, D, R, OK, FAIL, TIMEOUT, CANCEL, SKIP, LOST},
    Q: {D, R, OK, FAIL, TIMEOUT, CANCEL, SKIP, LOST},
    D: {Q, R, OK, FAIL, TIMEOUT, CANCEL, LOST},
    R: {Q, OK, FAIL, TIMEOUT, CANCEL, LOST},
    LOST: {OK, FAIL, TIMEOUT, CANCEL},
}


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(RunStatus, RunStatus)))
def test_transition_table(src: RunStatus, dst: RunStatus) -> None:
    assert can_transition(src, dst) is (dst in ALLOWED.get(src, set()))


# current -> reported -> result (None = ignored); 10 x 5 cases, all listed.
CALLBACKS: dict[RunStatus, dict[RunStatus, RunStatus | None]] = {
    C: {R: R, OK: OK, FAIL: FAIL, TIMEOUT: TIMEOUT, CANCEL: CANCEL},
    Q: {R: R, OK: OK, FAIL: FAIL, TIMEOUT: TIMEOUT, CANCEL: CANCEL},
    D: {R: R, OK: OK, FAIL: FAIL, TIMEOUT: TIMEOUT, CANCEL: CANCEL},
    R: {R: None, OK: OK, FAIL: FAIL, TIMEOUT: TIMEOUT, CANCEL: CANCEL},
    OK: dict.fromkeys(REPORTABLE),
    FAIL: dict.fromkeys(REPORTABLE),
    TIMEOUT: dict.fromkeys(REPORTABLE),
    CANCEL: dict.fromkeys(REPORTABLE),
    SKIP: dict.fromkeys(REPORTABLE),
    LOST: {R: None, OK: OK, FAIL: FAIL, TIMEOUT: TIMEOUT, CANCEL: CANCEL},
}


@pytest.mark.parametrize(
    ("current", "reported"), [(c, r) for c in RunStatus for r in sorted(REPORTABLE)]
)
def test_callback_table(current: RunStatus, reported: RunStatus) -> None:
    assert apply_callback(current, reported) == CALLBACKS[current][reported]


@pytest.mark.parametrize(
    ("current", "reported"), list(itertools.product(RunStatus, sorted(REPORTABLE)))
)
def test_every_applied_callback_is_an_allowed_transition(
    current: RunStatus, reported: RunStatus
) -> None:
    result = apply_callback(current, reported)
    assert result is None or can_transition(current, result)


def test_a_duplicate_callback_changes_nothing() -> None:
    status = apply_callback(D, OK)
    assert status is OK
    assert apply_callback(status, OK) is None


def test_a_finished_run_never_moves_back() -> None:
    for final in TERMINAL - {LOST}:
        assert not any(can_transition(final, dst) for dst in RunStatus)


def test_a_lost_run_is_corrected_by_a_late_result_only_once() -> None:
    corrected = apply_callback(LOST, FAIL)
    assert corrected is FAIL
    assert apply_callback(corrected, OK) is None


@pytest.mark.parametrize("reported", sorted(set(RunStatus) - REPORTABLE))
def test_statuses_a_sidecar_cannot_report_are_refused(reported: RunStatus) -> None:
    with pytest.raises(ValueError, match="sidecar reports"):
        apply_callback(R, reported)


def test_status_sets() -> None:
    assert {OK, FAIL, TIMEOUT, CANCEL, SKIP, LOST} == TERMINAL
    assert {C, D, R} == ACTIVE
    assert {OK, FAIL, TIMEOUT, CANCEL} == RESULTS
    assert all(is_terminal(s) == (s in TERMINAL) for s in RunStatus)
    assert not ACTIVE & TERMINAL and Q not in ACTIVE


def test_statuses_are_the_stored_spellings() -> None:
    assert [s.value for s in RunStatus] == [
        "claimed",
        "queued",
        "dispatched",
        "running",
        "succeeded",
        "failed",
        "timed_out",
        "cancelled",
        "skipped",
        "lost",
    ]

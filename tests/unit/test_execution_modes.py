"""Execution modes: what a due tick does while earlier runs are active or queued."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cadenza.core.ids import ExecutionId
from cadenza.core.modes import ExecutionMode, QueuedRun, TickDecision, decide_tick, next_from_queue

PARALLEL, SEQUENTIAL, SKIP = ExecutionMode.PARALLEL, ExecutionMode.SEQUENTIAL, ExecutionMode.SKIP
RUN, QUEUE = TickDecision.RUN, TickDecision.QUEUE


@pytest.mark.parametrize(
    ("mode", "active", "max_concurrent", "queued", "expected"),
    [
        (PARALLEL, 0, None, 0, RUN),
        (PARALLEL, 50, None, 0, RUN),
        (PARALLEL, 0, 1, 0, RUN),
        (PARALLEL, 1, 1, 0, TickDecision.SKIP),
        (PARALLEL, 2, 3, 0, RUN),
        (PARALLEL, 3, 3, 0, TickDecision.SKIP),
        (PARALLEL, 4, 3, 0, TickDecision.SKIP),  # maxConcurrent lowered under running work
        (SEQUENTIAL, 0, None, 0, RUN),
        (SEQUENTIAL, 1, None, 0, QUEUE),
        (SEQUENTIAL, 0, None, 2, QUEUE),  # never overtake runs already waiting
        (SEQUENTIAL, 1, None, 5, QUEUE),
        (SEQUENTIAL, 0, 5, 0, RUN),  # maxConcurrent does not apply
        (SEQUENTIAL, 1, 5, 0, QUEUE),
        (SKIP, 0, None, 0, RUN),
        (SKIP, 1, None, 0, TickDecision.SKIP),
        (SKIP, 1, 5, 0, TickDecision.SKIP),
        (SKIP, 0, None, 1, RUN),
    ],
)
def test_decide_tick(
    mode: ExecutionMode,
    active: int,
    max_concurrent: int | None,
    queued: int,
    expected: TickDecision,
) -> None:
    assert decide_tick(mode, active, max_concurrent, queued_runs=queued) is expected


def test_sequential_queue_bound_skips_when_full() -> None:
    assert decide_tick(SEQUENTIAL, 1, queued_runs=2, max_queued=3) is QUEUE
    assert decide_tick(SEQUENTIAL, 1, queued_runs=3, max_queued=3) is TickDecision.SKIP
    assert decide_tick(SEQUENTIAL, 1, queued_runs=0, max_queued=0) is TickDecision.SKIP
    assert decide_tick(SEQUENTIAL, 0, queued_runs=0, max_queued=0) is RUN


@pytest.mark.parametrize(
    ("active", "max_concurrent", "queued", "max_queued"),
    [(-1, None, 0, None), (0, 0, 0, None), (0, -2, 0, None), (0, None, -1, None), (0, None, 0, -1)],
)
def test_decide_tick_refuses_impossible_counts(
    active: int, max_concurrent: int | None, queued: int, max_queued: int | None
) -> None:
    with pytest.raises(ValueError):
        decide_tick(PARALLEL, active, max_concurrent, queued_runs=queued, max_queued=max_queued)


def test_modes_are_the_crd_spellings() -> None:
    assert [m.value for m in ExecutionMode] == ["Parallel", "Sequential", "Skip"]
    assert ExecutionMode("Sequential") is SEQUENTIAL


T0 = datetime(2024, 1, 1, tzinfo=UTC)
QUEUE_OUT_OF_ORDER = [
    QueuedRun(ExecutionId(7), T0 + timedelta(minutes=2)),
    QueuedRun(ExecutionId(5), T0),
    QueuedRun(ExecutionId(9), T0 + timedelta(minutes=1)),
    QueuedRun(ExecutionId(4), T0 + timedelta(minutes=1)),
]


def ids(runs: list[QueuedRun]) -> list[int]:
    return [run.execution_id for run in runs]


def test_sequential_releases_the_oldest_tick_when_idle() -> None:
    assert ids(next_from_queue(SEQUENTIAL, 0, QUEUE_OUT_OF_ORDER)) == [5]
    assert next_from_queue(SEQUENTIAL, 1, QUEUE_OUT_OF_ORDER) == []
    assert next_from_queue(SEQUENTIAL, 0, []) == []


def test_queue_ties_on_tick_break_by_id() -> None:
    later = [run for run in QUEUE_OUT_OF_ORDER if run.execution_id != 5]
    assert ids(next_from_queue(SEQUENTIAL, 0, later)) == [4]


def test_leftover_queue_drains_after_a_mode_edit() -> None:
    assert ids(next_from_queue(SKIP, 0, QUEUE_OUT_OF_ORDER)) == [5]
    assert next_from_queue(SKIP, 1, QUEUE_OUT_OF_ORDER) == []
    assert ids(next_from_queue(PARALLEL, 0, QUEUE_OUT_OF_ORDER)) == [5, 4, 9, 7]
    assert ids(next_from_queue(PARALLEL, 1, QUEUE_OUT_OF_ORDER, max_concurrent=3)) == [5, 4]
    assert next_from_queue(PARALLEL, 4, QUEUE_OUT_OF_ORDER, max_concurrent=3) == []


def test_next_from_queue_refuses_negative_active() -> None:
    with pytest.raises(ValueError):
        next_from_queue(SEQUENTIAL, -1, [])

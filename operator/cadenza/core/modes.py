"""Execution modes: what a due tick does while earlier runs of the same Task are still active.

- ``Parallel``: run, unless ``maxConcurrent`` runs are already active; then the tick is
  SKIPPED (recorded as a ``skipped`` execution, so it stays visible). Not queued: a Parallel
  Task's ticks are independent, and queueing behind a full set of slow runs would build a
  backlog that grows without bound and fires late, the opposite of what a time-triggered job
  wants. Users who want "catch up later" choose ``Sequential``.
- ``Sequential``: one run at a time across all pods; a tick that finds a run active, or runs
  already waiting, joins the queue (FIFO by tick), so ticks never overtake each other. An
  optional ``max_queued`` bounds the queue; a tick that finds it full is skipped.
- ``Skip``: a tick that finds a run active is skipped.

``maxConcurrent`` only applies to Parallel (the other modes imply one). "Active" means claimed,
dispatched or running (see ``transitions.ACTIVE``); queued runs are counted separately.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from datetime import datetime

from cadenza.core.ids import ExecutionId


class ExecutionMode(enum.StrEnum):
    PARALLEL = "Parallel"
    SEQUENTIAL = "Sequential"
    SKIP = "Skip"


class TickDecision(enum.StrEnum):
    RUN = "run"
    QUEUE = "queue"
    SKIP = "skip"


@dataclasses.dataclass(frozen=True)
class QueuedRun:
    """A run waiting in a Task's queue; the queue is ordered by tick, then by id."""

    execution_id: ExecutionId
    scheduled_at: datetime


def decide_tick(
    mode: ExecutionMode,
    active_runs: int,
    max_concurrent: int | None = None,
    queued_runs: int = 0,
    max_queued: int | None = None,
) -> TickDecision:
    """What a due tick does, given the Task's active and queued run counts."""
    _check_counts(active_runs, queued_runs)
    if max_concurrent is not None and max_concurrent < 1:
        raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
    if max_queued is not None and max_queued < 0:
        raise ValueError(f"max_queued must not be negative, got {max_queued}")
    if mode is ExecutionMode.PARALLEL:
        if max_concurrent is not None and active_runs >= max_concurrent:
            return TickDecision.SKIP
        return TickDecision.RUN
    if mode is ExecutionMode.SEQUENTIAL:
        if active_runs == 0 and queued_runs == 0:
            return TickDecision.RUN
        if max_queued is not None and queued_runs >= max_queued:
            return TickDecision.SKIP
        return TickDecision.QUEUE
    return TickDecision.RUN if active_runs == 0 else TickDecision.SKIP


def next_from_queue(
    mode: ExecutionMode,
    active_runs: int,
    queued: Sequence[QueuedRun],
    max_concurrent: int | None = None,
) -> list[QueuedRun]:
    """The queued runs to start now, oldest first.

    Sequential and Skip start the oldest one once nothing is active. Only Sequential queues,
    but a queue left behind when a Task's mode is edited still drains: Skip one at a time (it
    must not overlap runs), Parallel up to ``max_concurrent`` at once (all when unset).
    """
    _check_counts(active_runs, len(queued))
    ordered = sorted(queued, key=lambda run: (run.scheduled_at, run.execution_id))
    if mode is ExecutionMode.PARALLEL:
        if max_concurrent is None:
            return ordered
        return ordered[: max(0, max_concurrent - active_runs)]
    return ordered[:1] if active_runs == 0 else []


def _check_counts(active_runs: int, queued_runs: int) -> None:
    if active_runs < 0 or queued_runs < 0:
        raise ValueError(
            f"run counts must not be negative: active={active_runs}, queued={queued_runs}"
        )

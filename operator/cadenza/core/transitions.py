"""Run states: the life of one execution row and which moves between states are allowed.

::

    claimed ──► dispatched ──► running ──► succeeded | failed | timed_out | cancelled
       │  ▲          │            │
       │  └─ queued ◄┴────────────┘  (a retry, or a re-dispatch after 429/503)
       └──► skipped                   any non-terminal ──► lost ──► (late real result)

- ``claimed``: the tick's row exists (the claim); ``queued``: waiting behind a Sequential run or
  for a retry's backoff; ``dispatched``: a pod accepted it (202); ``running``: the sidecar said so.
- Terminal: ``succeeded failed timed_out cancelled skipped lost``. A terminal state is final,
  with one exception: ``lost`` (the leader gave up on a run it could not account for) may be
  corrected by a late *final* result from the sidecar, because the real outcome is better
  history than a guess. A late ``running`` report does not reopen a lost run: that would put it
  back among the active runs and block a Sequential queue on a run nobody tracks.
- Retries reuse the row: the leader moves dispatched/running to ``queued`` with the next attempt
  instead of recording ``failed``, ``timed_out`` or ``lost``, which are written only for the last
  attempt.
- Callbacks may overtake the leader's own bookkeeping (the sidecar can report ``running`` or a
  result before the leader has recorded ``dispatched``), so a report is accepted from every
  non-terminal state. Each report must be checked against the run's current attempt and token
  BEFORE calling ``apply_callback``; this module cannot tell attempts apart.

Invariants: every move ``apply_callback`` allows is one ``can_transition`` allows; a duplicate
or late report never moves a run backwards.
"""

from __future__ import annotations

import enum


class RunStatus(enum.StrEnum):
    CLAIMED = "claimed"
    QUEUED = "queued"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    LOST = "lost"


TERMINAL = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.TIMED_OUT,
        RunStatus.CANCELLED,
        RunStatus.SKIPPED,
        RunStatus.LOST,
    }
)
ACTIVE = frozenset({RunStatus.CLAIMED, RunStatus.DISPATCHED, RunStatus.RUNNING})
"""Runs that count against ``maxConcurrent`` and block Sequential/Skip modes."""
RESULTS = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED}
)
"""Final outcomes a sidecar can report."""
REPORTABLE = RESULTS | {RunStatus.RUNNING}
"""Every status a sidecar callback may carry."""

_FINISH = RESULTS | {RunStatus.LOST}
_ALLOWED: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.CLAIMED: _FINISH
    | {RunStatus.QUEUED, RunStatus.DISPATCHED, RunStatus.RUNNING, RunStatus.SKIPPED},
    RunStatus.QUEUED: _FINISH | {RunStatus.DISPATCHED, RunStatus.RUNNING, RunStatus.SKIPPED},
    RunStatus.DISPATCHED: _FINISH | {RunStatus.RUNNING, RunStatus.QUEUED},
    RunStatus.RUNNING: _FINISH | {RunStatus.QUEUED},
    RunStatus.LOST: RESULTS,
}


def is_terminal(status: RunStatus) -> bool:
    return status in TERMINAL


def can_transition(src: RunStatus, dst: RunStatus) -> bool:
    """Whether a run may move from ``src`` to ``dst``; staying put is not a transition."""
    return dst in _ALLOWED.get(src, frozenset())


def apply_callback(current: RunStatus, reported: RunStatus) -> RunStatus | None:
    """The status a sidecar's report moves the run to, or None to ignore the report (a
    duplicate, a late report after a final state, or ``running`` for a run already past it)."""
    if reported not in REPORTABLE:
        raise ValueError(f"a sidecar reports one of {sorted(REPORTABLE)}, not {reported.value!r}")
    return reported if can_transition(current, reported) else None

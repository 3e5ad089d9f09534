"""Cancel of a run through the REST API: a guarded transition any replica may write, noted in the
change log so the leader learns of it like of a callback's result.

Invariants: the run is locked (``SELECT ... FOR UPDATE``) before it is read, so a cancel racing
a callback or the leader leaves exactly one final state; a run already in a terminal state is
not touched (the caller answers 409).
"""

from __future__ import annotations

import dataclasses

from sqlalchemy.engine import Connection, Engine

from cadenza.core.ids import ExecutionId
from cadenza.core.runs import Outcome
from cadenza.core.transitions import TERMINAL, RunStatus
from cadenza.store import reports


@dataclasses.dataclass(frozen=True)
class Cancelled:
    previous: RunStatus
    """The run's status before the cancel (terminal: nothing was changed)."""
    attempt: int

    @property
    def applied(self) -> bool:
        return self.previous not in TERMINAL


def cancel(engine: Engine, run: ExecutionId, reason: str) -> Cancelled | None:
    """End the run ``cancelled`` unless it is over; None when there is no such run."""
    with engine.begin() as conn:
        return cancel_in(conn, run, reason)


def cancel_in(conn: Connection, run: ExecutionId, reason: str) -> Cancelled | None:
    locked = reports.lock_many_for_reports(conn, [run]).get(run)
    if locked is None:
        return None
    found = Cancelled(locked.status, locked.attempt)
    if found.applied:
        outcome = Outcome(RunStatus.CANCELLED, error=reason)
        reports.end_many_checked(conn, [(run, locked.attempt, outcome, None)])
    return found

"""The leader's store port: everything the leader's run pipeline asks of the database.

Two implementations keep one contract (``tests/contract/test_run_store.py`` runs the same suite
against both): :class:`cadenza.store.leader_store.LeaderStore` over MySQL, fenced by the leader's
epoch, and :class:`cadenza.store.memory.MemoryRunStore`, for unit tests of the scheduler and the
run rules without a database.

Invariants every implementation keeps:
- Each write is a guarded transition: it applies only from the states the core allows
  (:mod:`cadenza.core.runs`) and for the attempt named, and says whether it applied. A write
  that did not apply changed nothing.
- A claim of a tick (or a trigger key) already claimed returns None for it, never a second run.
- Batch methods apply all their items in one transaction, item by item: one item that does not
  apply does not spoil the others.
- A leader whose epoch was overtaken gets :class:`cadenza.store.fencing.Fenced` from any write,
  before anything is written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from cadenza.core.ids import ExecutionId, TaskUid
from cadenza.core.runs import Next, Outcome
from cadenza.core.transitions import RunStatus
from cadenza.store.executions import Execution, Origin, RunState
from cadenza.store.fencing import Fenced
from cadenza.store.retention import HistoryLimit
from cadenza.store.runs import Dispatch

__all__ = ["Balance", "Begin", "Claims", "Fenced", "HistoryLimit", "NewRun", "RunStore"]


@dataclasses.dataclass(frozen=True)
class NewRun:
    """A run to claim: a tick, a misfired tick or a trigger of one Task."""

    task: TaskUid
    namespace: str
    name: str
    tick: datetime | None
    origin: Origin
    status: RunStatus
    max_attempts: int = 1
    trigger_key: str | None = None


@dataclasses.dataclass(frozen=True)
class Claims:
    """What a batch of claims became, item by item: the run's id, or None when the tick was
    claimed already or the Task is not mirrored yet (then it is in ``unmirrored``)."""

    runs: list[ExecutionId | None]
    unmirrored: frozenset[TaskUid]


@dataclasses.dataclass(frozen=True)
class Balance:
    """A Task's load-balancer state after a pick, saved with the dispatch that used it."""

    task: TaskUid
    strategy: str
    state: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Begin:
    """Record where ``attempt`` of ``run`` is about to go, before it is sent."""

    run: ExecutionId
    attempt: int
    to: Dispatch
    balance: Balance | None = None


class RunStore(Protocol):
    async def claim(self, runs: Sequence[NewRun]) -> Claims:
        """Insert the runs of a batch of ticks and triggers, in one transaction."""
        ...

    async def begin_dispatch(self, begin: Begin) -> bool:
        """Point the run's attempt at a pod (from waiting, or from a pod that just refused the
        same attempt); False when the run is no longer waiting for one."""
        ...

    async def confirm(self, run: ExecutionId, attempt: int) -> bool:
        """The pod accepted ``attempt``: dispatched → running."""
        ...

    async def end_attempt(self, run: ExecutionId, attempt: int, decision: Next) -> bool:
        """The dispatched ``attempt`` ended: finish the run, or queue its retry."""
        ...

    async def give_up(
        self, run: ExecutionId, attempt: int, outcome: Outcome, retry_at: datetime | None
    ) -> bool:
        """No pod took ``attempt``: it counts as failed; queue a retry for ``retry_at``, or,
        without one, end the run with ``outcome``."""
        ...

    async def open_runs(self) -> list[Execution]:
        """Every run not over yet, oldest first."""
        ...

    async def current(self, runs: Sequence[ExecutionId]) -> dict[ExecutionId, RunState]:
        """Where ``runs`` stand now (missing: pruned or never existed)."""
        ...

    async def last_ticks(self, tasks: Sequence[TaskUid]) -> dict[TaskUid, datetime]:
        """Each Task's latest claimed tick."""
        ...

    async def balance_state(self, task: TaskUid, strategy: str) -> dict[str, Any]:
        """The Task's saved load-balancer state for ``strategy`` ({} when none or another's)."""
        ...

    async def prune(self, limits: Sequence[HistoryLimit]) -> int:
        """Delete the finished runs beyond each Task's history limits; how many runs went. A Task
        with a large backlog may keep some for the next call, but never keeps another Task from
        being pruned. Tasks with nothing to prune cost no write."""
        ...

    async def changes_since(
        self, after: int, gaps: Sequence[int], limit: int
    ) -> list[tuple[int, ExecutionId]]:
        """Runs changed outside the leader (callbacks), as ``(seq, run)`` above ``after`` or
        among ``gaps``, oldest first."""
        ...

    async def last_change(self) -> int:
        """The sequence number of the newest change (where a new leader starts reading)."""
        ...

    async def prune_changes(self, max_age_seconds: int) -> int:
        """Delete one batch of change rows older than ``max_age_seconds``."""
        ...

    async def close(self) -> None: ...

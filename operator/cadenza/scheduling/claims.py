"""What the scheduler claims (a tick or a manual trigger of one Task), what a claim became, and
what the scheduler tells the rest of the leader about each Task's schedule."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime

from cadenza.core.ids import ExecutionId
from cadenza.core.transitions import RunStatus
from cadenza.scheduling.plans import TaskPlan
from cadenza.store import executions

Origin = executions.Origin


@dataclasses.dataclass(frozen=True)
class Claim:
    plan: TaskPlan
    tick: datetime | None
    origin: Origin
    trigger_key: str | None = None


@dataclasses.dataclass(frozen=True)
class Claimed:
    claim: Claim
    run: ExecutionId
    status: RunStatus


ScheduleHook = Callable[[TaskPlan, datetime | None], None]
"""Told each Task's next fire time (None: not scheduled), for its status."""
GoneHook = Callable[[TaskPlan], None]
"""Told that a Task was deleted (or replaced by a new one of the same name): whatever is kept
about it goes."""
MisfireHook = Callable[[TaskPlan, int, int], None]
"""Told how many missed ticks a takeover fired and dropped, per Task."""

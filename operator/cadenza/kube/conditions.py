"""Task conditions the leader derives from the mirror.

``Ready`` says whether the Task can be scheduled at all (every field of its spec is one the
engine can use: the schedule and time zone parse, every number is within its bounds);
``ExecutorAvailable`` whether every Executor it names exists; ``Scheduled`` (derived by the
leader from the plan) whether ticks fire. A Task that reached the cluster
invalid (no admission webhook installed, or stored before a bound existed) gets ``Ready=False``
and a Warning event (posted by the status book when the condition turns bad), never a crash.
The reason is ``InvalidSchedule`` when only the schedule or the time zone is wrong, else
``InvalidSpec``; the message lists every problem, each starting with its field's path.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cadenza.core import taskspec
from cadenza.core.fields import FieldError


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str
    observed_generation: int


@functools.lru_cache(maxsize=1024)
def _shared(kind: str, status: str, reason: str, message: str, generation: int) -> Condition:
    """One instance for all equal conditions: every valid Task holds the same three, and the
    leader holds them for each of thousands of Tasks (a condition is immutable)."""
    return Condition(kind, status, reason, message, generation)


def for_task(
    generation: int, problems: Sequence[FieldError], missing: list[str]
) -> list[Condition]:
    available = (
        _shared(
            "ExecutorAvailable",
            "False",
            "ExecutorNotFound",
            f"spec.executors: no Executor named {', '.join(sorted(missing))} in this namespace",
            generation,
        )
        if missing
        else _shared(
            "ExecutorAvailable", "True", "ExecutorsFound", "every named Executor exists", generation
        )
    )
    return [ready(generation, problems), available]


def ready(generation: int, problems: Sequence[FieldError]) -> Condition:
    if not problems:
        return _shared("Ready", "True", "Valid", "schedule and time zone are valid", generation)
    return _shared(
        "Ready",
        "False",
        invalid_reason(problems),
        "; ".join(_spec_path(str(p)) for p in problems),
        generation,
    )


def scheduled(
    generation: int, problems: Sequence[FieldError], suspend: bool, next_fire: datetime | None
) -> Condition:
    """Whether ticks fire, and if not, why: an invalid spec (see ``Ready``), ``spec.suspend``,
    or a schedule with no tick left."""
    if next_fire is not None:
        return _shared(
            "Scheduled", "True", "Scheduled", "ticks fire; see nextScheduleTime", generation
        )
    if problems:
        return _shared(
            "Scheduled",
            "False",
            invalid_reason(problems),
            "no ticks fire: the spec is invalid (see Ready)",
            generation,
        )
    if suspend:
        return _shared(
            "Scheduled", "False", "Suspended", "spec.suspend is true: no ticks fire", generation
        )
    return _shared("Scheduled", "False", "NotScheduled", "no tick to fire", generation)


def invalid_reason(problems: Sequence[FieldError]) -> str:
    if all(p.field in taskspec.SCHEDULE_FIELDS for p in problems):
        return "InvalidSchedule"
    return "InvalidSpec"


def _spec_path(reason: str) -> str:
    """``schedule: ...`` as ``spec.schedule: ...``, the path ``kubectl explain`` knows."""
    return reason if reason.startswith("spec") else f"spec.{reason}"

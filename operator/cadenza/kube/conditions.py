"""Task conditions the leader derives from the mirror.

``Ready`` says whether the Task can be scheduled at all (its schedule and time zone parse);
``ExecutorAvailable`` whether every Executor it names exists. A Task that reached the cluster
invalid (no admission webhook installed) gets ``Ready=False`` and a Warning event (posted by the
status book when the condition turns bad), never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str
    observed_generation: int


def for_task(generation: int, invalid_reason: str | None, missing: list[str]) -> list[Condition]:
    ready = (
        Condition("Ready", "False", "InvalidSchedule", _spec_path(invalid_reason), generation)
        if invalid_reason
        else Condition("Ready", "True", "Valid", "schedule and time zone are valid", generation)
    )
    available = (
        Condition(
            "ExecutorAvailable",
            "False",
            "ExecutorNotFound",
            f"spec.executors: no Executor named {', '.join(sorted(missing))} in this namespace",
            generation,
        )
        if missing
        else Condition(
            "ExecutorAvailable", "True", "ExecutorsFound", "every named Executor exists", generation
        )
    )
    return [ready, available]


def _spec_path(reason: str) -> str:
    """``schedule: ...`` as ``spec.schedule: ...``, the path ``kubectl explain`` knows."""
    return reason if reason.startswith("spec.") else f"spec.{reason}"

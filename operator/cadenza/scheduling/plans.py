"""A Task's spec turned into the plan the engine acts on, once per spec change.

Pure: no I/O. The spec is read by :mod:`cadenza.core.taskspec`, the one reader every part of the
operator shares; this module only adds the Task's identity and what the engine derives from it.

Invariants:
- :func:`plan_of` never raises: a spec with problems gives a plan with ``schedule = None`` and the
  problems listed, which is never ticked (the mirror reports ``Ready=False`` for it). Manual
  triggers still fire it when its problems are only in when it fires (``runnable``), because a
  manual run needs no schedule.
- Each bad field of such a plan holds its default, so code that reads a plan never meets a value
  it cannot compute with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cadenza.core import schedule as schedule_
from cadenza.core import taskspec
from cadenza.core.fields import FieldError
from cadenza.core.ids import TaskUid
from cadenza.core.misfire import MisfirePolicy
from cadenza.core.modes import ExecutionMode
from cadenza.core.retry import RetryPolicy
from cadenza.core.strategies import Strategy
from cadenza.kube.views import TaskView

ExecutorEntry = taskspec.ExecutorRef
"""One of ``spec.executors`` (name, weight, priority)."""


@dataclass(frozen=True, slots=True)
class TaskPlan:
    uid: TaskUid
    namespace: str
    name: str
    generation: int
    spec_hash: str
    schedule: schedule_.Schedule | None
    suspend: bool
    mode: ExecutionMode
    max_concurrent: int | None
    strategy: Strategy
    executors: tuple[ExecutorEntry, ...]
    handler: str
    payload: Any
    timeout_seconds: int
    retry: RetryPolicy
    misfire: MisfirePolicy
    starting_deadline_seconds: int | None
    max_misfire_runs: int
    history_max_age_seconds: int
    history_max_runs: int
    trigger: str | None
    problems: tuple[FieldError, ...] = ()
    """What is wrong with the spec (or what the engine could not compute from it)."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def problem(self) -> str | None:
        """The problems as one message, each starting with its field's path; None when valid."""
        return "; ".join(str(p) for p in self.problems) or None

    @property
    def runnable(self) -> bool:
        """Whether a manual run can be made of the spec: nothing is wrong but when it fires."""
        return all(p.field in taskspec.TIMING_FIELDS for p in self.problems)

    def entry(self, executor: str) -> ExecutorEntry | None:
        return next((e for e in self.executors if e.name == executor), None)

    def unscheduled(self, field: str, reason: str) -> TaskPlan:
        """This plan taken off the schedule for what the engine could not compute from it."""
        problem = FieldError(field, reason)
        return dataclasses.replace(self, schedule=None, problems=(*self.problems, problem))


def plan_of(view: TaskView) -> TaskPlan:
    spec, problems = view.task_spec
    return TaskPlan(
        uid=TaskUid(view.uid),
        namespace=view.namespace,
        name=view.name,
        generation=view.generation,
        spec_hash=view.spec_hash,
        # A spec with any problem is never ticked, whichever field it lies in.
        schedule=None if problems else spec.schedule,
        suspend=spec.suspend,
        mode=spec.mode,
        max_concurrent=spec.max_concurrent,
        strategy=spec.strategy,
        executors=spec.executors,
        handler=spec.handler,
        payload=spec.payload,
        timeout_seconds=spec.timeout_seconds,
        retry=spec.retry,
        misfire=spec.misfire,
        starting_deadline_seconds=spec.starting_deadline_seconds,
        max_misfire_runs=spec.max_misfire_runs,
        history_max_age_seconds=spec.history_max_age_seconds,
        history_max_runs=spec.history_max_runs,
        trigger=view.trigger,
        problems=problems,
    )


def retry_policy(spec: Mapping[str, Any]) -> RetryPolicy:
    """``spec.retry`` with the CRD's defaults (also read by replicas applying callbacks from the
    stored spec); a bad field takes its default, so this never raises."""
    return taskspec.read_retry(spec)[0]

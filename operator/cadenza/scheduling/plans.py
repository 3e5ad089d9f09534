"""A Task's spec turned into the plan the engine acts on, once per spec change.

Pure: no I/O. A plan whose schedule cannot be parsed has ``schedule = None`` and is never
ticked (the mirror reports ``Ready=False`` for it); manual triggers still fire it because they
need no schedule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cadenza.core import schedule as schedule_
from cadenza.core.ids import TaskUid
from cadenza.core.misfire import MisfirePolicy
from cadenza.core.modes import ExecutionMode
from cadenza.core.retry import RetryPolicy
from cadenza.core.strategies import Strategy
from cadenza.kube.views import TaskView


@dataclass(frozen=True)
class ExecutorEntry:
    name: str
    weight: int
    priority: int


@dataclass(frozen=True)
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

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def entry(self, executor: str) -> ExecutorEntry | None:
        return next((e for e in self.executors if e.name == executor), None)


def plan_of(view: TaskView) -> TaskPlan:
    spec: Mapping[str, Any] = view.spec
    try:
        parsed: schedule_.Schedule | None = schedule_.parse_schedule(
            str(spec.get("schedule", "")), str(spec.get("timeZone", "UTC"))
        )
    except schedule_.ScheduleError:
        parsed = None
    history: Mapping[str, Any] = spec.get("history") or {}
    return TaskPlan(
        uid=TaskUid(view.uid),
        namespace=view.namespace,
        name=view.name,
        generation=view.generation,
        spec_hash=view.spec_hash,
        schedule=parsed,
        suspend=bool(spec.get("suspend", False)),
        mode=ExecutionMode(spec.get("executionMode", "Parallel")),
        max_concurrent=spec.get("maxConcurrent"),
        strategy=Strategy(spec.get("loadBalanceStrategy", "RoundRobin")),
        executors=tuple(
            ExecutorEntry(str(e["name"]), int(e.get("weight", 1)), int(e.get("priority", 0)))
            for e in spec.get("executors") or []
        ),
        handler=str(spec.get("handler", "default")),
        payload=spec.get("payload"),
        timeout_seconds=int(spec.get("timeoutSeconds", 300)),
        retry=retry_policy(spec),
        misfire=MisfirePolicy(spec.get("misfirePolicy", "FireOnce")),
        starting_deadline_seconds=spec.get("startingDeadlineSeconds"),
        max_misfire_runs=int(spec.get("maxMisfireRuns", 10)),
        history_max_age_seconds=int(history.get("maxAgeSeconds", 604800)),
        history_max_runs=int(history.get("maxRuns", 1000)),
        trigger=view.trigger,
    )


def retry_policy(spec: Mapping[str, Any]) -> RetryPolicy:
    """``spec.retry`` with the CRD's defaults (also read by replicas applying callbacks)."""
    retry: Mapping[str, Any] = spec.get("retry") or {}
    backoff = float(retry.get("backoffSeconds", 10))
    return RetryPolicy(
        max_attempts=int(retry.get("maxAttempts", 1)),
        backoff_seconds=backoff,
        max_backoff_seconds=max(backoff, float(retry.get("maxBackoffSeconds", 300))),
        jitter=int(retry.get("jitterPercent", 20)) / 100,
    )

"""The REST API's bodies, as pydantic models: they validate requests and, through
:mod:`cadenza.api.openapi`, are the OpenAPI document, so the two never disagree.

Task bodies take the original system's JSON verbatim (``cron_expression``, ``execution_mode:
parallel``, ``load_balance_strategy: round_robin``) and Cadenza's spellings beside them
(``schedule``, ``executionMode: Parallel``); giving both spellings of one field is refused.
Types are strict: ``"5"`` is not a number and ``1`` is not a boolean. Unknown fields are refused
with their name, so a typo never passes silently.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

ExecutionModeName = Literal["parallel", "sequential", "skip", "Parallel", "Sequential", "Skip"]
StrategyName = Literal[
    "round_robin", "weighted", "random", "sticky", "least_loaded",
    "RoundRobin", "Weighted", "Random", "Sticky", "LeastLoaded",
]  # fmt: skip
MisfireName = Literal["Skip", "FireOnce", "FireAll"]

SPELLINGS: tuple[tuple[str, str], ...] = (
    ("cron_expression", "schedule"),
    ("time_zone", "timeZone"),
    ("execution_mode", "executionMode"),
    ("load_balance_strategy", "loadBalanceStrategy"),
    ("timeout_seconds", "timeoutSeconds"),
    ("retries", "retry"),
    ("enabled", "suspend"),
)
"""Pairs of fields that say the same thing; a body may hold one of each pair."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExecutorEntry(_Strict):
    """An Executor this Task may run on (``spec.executors[]``)."""

    name: StrictStr
    weight: StrictInt | None = None
    priority: StrictInt | None = None


class RetryFields(_Strict):
    """``spec.retry``; unset fields keep their defaults."""

    maxAttempts: StrictInt | None = None
    backoffSeconds: StrictInt | None = None
    maxBackoffSeconds: StrictInt | None = None
    jitterPercent: StrictInt | None = None


class HistoryFields(_Strict):
    """``spec.history``; unset fields keep their defaults."""

    maxAgeSeconds: StrictInt | None = None
    maxRuns: StrictInt | None = None


class TaskFields(_Strict):
    """Every field a Task body may hold; all optional (the body of ``PATCH``)."""

    name: StrictStr | None = Field(
        None, description="Task name; an original name (`test_task`) becomes `test-task`."
    )
    namespace: StrictStr | None = Field(None, description="Default: the API's default namespace.")
    cron_expression: StrictStr | None = Field(None, description="The original system's name.")
    schedule: StrictStr | None = Field(None, description="Cadenza's name for `cron_expression`.")
    time_zone: StrictStr | None = None
    timeZone: StrictStr | None = None
    execution_mode: ExecutionModeName | None = None
    executionMode: ExecutionModeName | None = None
    load_balance_strategy: StrategyName | None = None
    loadBalanceStrategy: StrategyName | None = None
    executors: list[StrictStr | ExecutorEntry] | None = Field(
        None, description="Executor names, or entries with weight and priority."
    )
    handler: StrictStr | None = None
    payload: Any = Field(None, description="Any JSON value, passed to the handler unchanged.")
    timeout_seconds: StrictInt | None = None
    timeoutSeconds: StrictInt | None = None
    retries: StrictInt | None = Field(
        None, ge=0, le=99, description="Retries after the first attempt (maxAttempts - 1)."
    )
    retry: RetryFields | None = None
    enabled: StrictBool | None = Field(None, description="false = suspended.")
    suspend: StrictBool | None = None
    maxConcurrent: StrictInt | None = None
    startingDeadlineSeconds: StrictInt | None = None
    misfirePolicy: MisfireName | None = None
    maxMisfireRuns: StrictInt | None = None
    history: HistoryFields | None = None
    description: StrictStr | None = Field(
        None, max_length=4096, description="Kept in the annotation `cadenza.dev/description`."
    )
    labels: dict[StrictStr, StrictStr] | None = None

    @model_validator(mode="after")
    def _one_spelling_each(self) -> TaskFields:
        for first, second in SPELLINGS:
            if first in self.model_fields_set and second in self.model_fields_set:
                raise ValueError(f"{second}: give either {first} or {second}, not both")
        return self


class TaskBody(TaskFields):
    """The body of ``POST`` and ``PUT``: a name and a schedule are required."""

    @model_validator(mode="after")
    def _required(self) -> TaskBody:
        if self.name is None:
            raise ValueError("name: required")
        if self.cron_expression is None and self.schedule is None:
            raise ValueError("cron_expression: required (or schedule)")
        return self


class TaskOut(BaseModel):
    name: str
    namespace: str
    originalName: str | None = None
    description: str | None = None
    uid: str
    resourceVersion: str
    createdAt: str | None = None
    labels: dict[str, str] = {}
    spec: dict[str, Any]
    status: dict[str, Any] = {}
    nextFireTimes: list[datetime] = Field(
        [], description="The next fire times (UTC), empty when suspended or invalid."
    )


class TaskList(BaseModel):
    items: list[TaskOut]
    continue_: str | None = Field(
        None,
        alias="continue",
        description="Pass as `continue` for the next page; null on the last page.",
    )


class TriggerOut(BaseModel):
    namespace: str
    task: str
    triggerKey: str
    executionId: int | None = Field(
        None, description="The run's id; null when the leader had not recorded it in time."
    )


class AttemptOut(BaseModel):
    attempt: int
    status: str
    executor: str | None = None
    pod: str | None = None
    podIp: str | None = None
    dispatchedAt: datetime | None = None
    finishedAt: datetime | None = None
    error: str | None = None


class ExecutionOut(BaseModel):
    id: int
    namespace: str
    task: str
    taskUid: str
    origin: Literal["schedule", "misfire", "manual", "api"]
    status: str
    scheduledAt: datetime | None = None
    triggerKey: str | None = None
    requestedAt: datetime
    attempt: int
    maxAttempts: int
    executor: str | None = None
    pod: str | None = None
    podIp: str | None = None
    dispatchedAt: datetime | None = None
    startedAt: datetime | None = None
    finishedAt: datetime | None = None
    error: str | None = None
    exitCode: int | None = None


class ExecutionDetail(ExecutionOut):
    result: Any = None
    attempts: list[AttemptOut] = []


class ExecutionList(BaseModel):
    items: list[ExecutionOut]
    cursor: str | None = Field(
        None, description="Pass as `cursor` for older runs; null on the last page."
    )


class ErrorOut(BaseModel):
    error: str
    field: str | None = None


PUBLISHED: tuple[type[BaseModel], ...] = (
    TaskBody, TaskFields, TaskOut, TaskList, TriggerOut, ExecutionOut, ExecutionDetail,
    ExecutionList, ErrorOut,
)  # fmt: skip
"""Every model the OpenAPI document describes."""

"""The bodies of ``/api/v1/executors`` (registration, status and the answers) and the answer of
a run's cancel, as pydantic models, validated like :mod:`cadenza.api.models` (strict types,
unknown fields refused by name).

The registration body is the original system's, verbatim: ``name``, ``instance_id``,
``base_url``, ``health_check_url``, ``tasks`` (``task_name``, ``cron_expression``); Cadenza adds
the optional ``namespace`` and ``heartbeat_seconds``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServedTask(_Strict):
    """A Task the executor serves; created with this schedule if it does not exist."""

    task_name: StrictStr = Field(description="Task name; `test_task` is the Task `test-task`.")
    cron_expression: StrictStr | None = Field(
        None, description="The schedule of a Task created by the registration (required then)."
    )


class RegisterBody(_Strict):
    name: StrictStr = Field(
        description="The Executor's name (`sample_executor` → `sample-executor`)."
    )
    instance_id: StrictStr = Field(description="Unique in the namespace; 1-63 letters, digits, -_.")
    base_url: StrictStr = Field(description="http(s) URL of the executor's sidecar protocol.")
    health_check_url: StrictStr | None = Field(
        None, description="Probed with GET; default base_url + the Executor's healthCheck.path."
    )
    tasks: list[ServedTask] = Field([], max_length=256)
    namespace: StrictStr | None = Field(None, description="Default: the API's default namespace.")
    heartbeat_seconds: StrictInt | None = Field(
        None, ge=1, le=3600,
        description="Heartbeat interval the Executor expects (default 10, or the Executor's).",
    )  # fmt: skip


class StatusBody(_Strict):
    status: Literal["online", "draining", "offline"]


class HeartbeatBody(_Strict):
    """Heartbeats carry no fields; an empty body or ``{}``."""


class RegisterOut(BaseModel):
    namespace: str
    executor: str
    instanceId: str
    created: bool = Field(description="The Executor was created by this registration.")
    token: str = Field(description="The dispatch token runs arrive with (always set).")
    heartbeatSeconds: int | None
    tasks: list[str] = Field(description="The Tasks (Kubernetes names) this Executor serves.")
    createdTasks: list[str]


class HeartbeatOut(BaseModel):
    namespace: str
    executor: str
    instanceId: str
    beatAt: datetime


class EndpointOut(BaseModel):
    instanceId: str
    baseUrl: str
    healthCheckUrl: str | None = None
    state: str
    lastHeartbeat: datetime | None = None
    healthy: bool | None = None
    inFlight: int | None = None
    lastError: str | None = None


class ExecutorOut(BaseModel):
    name: str
    namespace: str
    uid: str
    selector: dict[str, Any] | None = None
    heartbeatSeconds: int | None = None
    endpoints: list[EndpointOut] = []
    pods: list[dict[str, Any]] = Field(
        [], description="status.pods: selected pods, then endpoints."
    )
    totalPods: int = 0
    healthyPods: int = 0
    conditions: list[dict[str, Any]] = []


class ExecutorList(BaseModel):
    items: list[ExecutorOut]


class CancelOut(BaseModel):
    """The answer of ``POST /api/v1/executions/{id}/cancel``."""

    id: int
    status: Literal["cancelled"]
    previousStatus: str
    pod: str | None = None
    podNotified: bool = Field(description="The pod or endpoint acknowledged the cancel.")


PUBLISHED: tuple[type[BaseModel], ...] = (
    RegisterBody, StatusBody, HeartbeatBody, RegisterOut, HeartbeatOut, EndpointOut, ExecutorOut,
    ExecutorList, CancelOut,
)  # fmt: skip

"""The wire protocol's shapes: the dispatch request, run states, run views and the callback body.

Invariants:
- A dispatch body is accepted only if every field has the documented type and bounds; the first
  offending field is named in ``InvalidRequest.field`` so the 400 answer can point at it. Unknown
  fields are ignored, for forward compatibility.
- JSON never carries NaN or Infinity (they are not JSON), in either direction.
- Timestamps leave the sidecar as RFC 3339 UTC with milliseconds (``2024-05-01T12:00:00.123Z``).
- ``Report`` is the single record of a finished run: the callback body, the run view and the spool
  file are all derived from it.
- A batch (protocol version 2) is only a list of dispatch bodies: each item is validated by the
  very function that validates a single body, so the two cannot drift apart.
"""

from __future__ import annotations

import enum
import functools
import json
import math
import re
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NewType, TypeAlias

ExecutionId = NewType("ExecutionId", str)

JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"
JsonObject: TypeAlias = "dict[str, JsonValue]"

MAX_EXECUTION_ID_LENGTH = 128
PROTOCOL_VERSION = 3
"""2 added batches; 3 added ``startAt`` (a run held until its tick). ``/healthz`` says it, so
that an operator sends ``startAt`` only to a sidecar that honours it."""
MAX_HOLD_SECONDS = 10.0
"""The longest a run is held for its ``startAt``, from its arrival."""
PERMANENT_REFUSAL_STATUSES = frozenset({403, 404, 409, 410})

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$", re.ASCII
)


class RunState(enum.StrEnum):
    """Where a run is; every state but RUNNING is final and is also the callback's status."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


class InvalidRequest(Exception):
    """A dispatch body the sidecar refuses; ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ExecutionRequest:
    """One validated ``POST /v1/executions`` body."""

    execution_id: ExecutionId
    task_uid: str
    task: str
    epoch: int
    handler: str
    payload: JsonValue
    scheduled_at: str
    """As sent (RFC 3339), passed through to the handler unchanged."""
    attempt: int
    timeout_seconds: float
    callback_url: str
    callback_token: str
    callback_batch_url: str | None = None
    """Where this run's report may be posted together with others (protocol version 2)."""
    deadline: datetime | None = None
    """When the operator stops waiting for this attempt: the run is not started after it and
    is stopped by it (:meth:`time_allowed`), so the operator's retry never overlaps it."""
    start_at: datetime | None = None
    """When to start the handler (protocol version 3): the operator sends a run a little ahead
    of its tick and the sidecar holds it until then (:meth:`hold_seconds`)."""

    def hold_seconds(self, now: datetime) -> float:
        """Seconds to hold the run before its handler starts: until ``start_at``, never more
        than ``MAX_HOLD_SECONDS`` (a clock far off the operator's must not park a run), 0 when
        it is due."""
        if self.start_at is None:
            return 0.0
        return min(max((self.start_at - now).total_seconds(), 0.0), MAX_HOLD_SECONDS)

    def time_allowed(self, now: datetime) -> float:
        """Seconds the run may take from ``now``: its ``timeoutSeconds``, or less when its
        deadline comes first; 0 or less means it must not start."""
        if self.deadline is None:
            return self.timeout_seconds
        return min(self.timeout_seconds, (self.deadline - now).total_seconds())

    def may_start(self, now: datetime) -> bool:
        """Whether the attempt may begin at ``now``: never past its deadline, when the operator
        has given it up and may have sent it elsewhere (started, the tick could run twice)."""
        return self.time_allowed(now) > 0


@dataclass(frozen=True)
class Outcome:
    """What invoking a handler produced, before it is stamped with times and the pod."""

    state: RunState
    result: JsonValue = None
    error: str | None = None
    exit_code: int | None = None


@dataclass(frozen=True)
class Report:
    """A finished run: what the callback carries plus where and how to send it."""

    execution_id: ExecutionId
    status: RunState
    attempt: int
    pod: str
    started_at: str
    finished_at: str
    result: JsonValue
    error: str | None
    exit_code: int | None
    callback_url: str
    callback_token: str
    callback_batch_url: str | None = None

    def callback_body(self) -> JsonObject:
        return {
            "executionId": self.execution_id,
            "status": self.status.value,
            "attempt": self.attempt,
            "pod": self.pod,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "result": self.result,
            "error": self.error,
            "exitCode": self.exit_code,
        }

    def view(self) -> JsonObject:
        return run_view(
            self.execution_id,
            self.status,
            attempt=self.attempt,
            pod=self.pod,
            started_at=self.started_at,
            finished_at=self.finished_at,
            result=self.result,
            error=self.error,
            exit_code=self.exit_code,
        )


def run_view(
    execution_id: ExecutionId,
    state: RunState,
    *,
    attempt: int,
    pod: str,
    started_at: str,
    finished_at: str | None = None,
    result: JsonValue = None,
    error: str | None = None,
    exit_code: int | None = None,
) -> JsonObject:
    """The body of ``GET /v1/executions/{id}`` (and of duplicate POSTs and DELETE)."""
    return {
        "executionId": execution_id,
        "state": state.value,
        "attempt": attempt,
        "pod": pod,
        "startedAt": started_at,
        "finishedAt": finished_at,
        "result": result,
        "error": error,
        "exitCode": exit_code,
    }


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now() -> str:
    return format_time(datetime.now(UTC))


def dumps(value: JsonValue) -> str:
    """Strict JSON text (no NaN/Infinity), compact."""
    return json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(text: str | bytes) -> Any:
    """Strict JSON parsing: refuses NaN and Infinity, which Python's json would accept, and
    nesting too deep to decode (a ValueError, like any other text that is not JSON)."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("the JSON nests too deeply to decode") from None


def decode_body(raw: bytes) -> Any:
    """The request body as JSON; raises InvalidRequest naming ``body`` when it is not JSON."""
    try:
        return loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest("body", f"request body is not valid JSON: {exc}") from None


def parse_batch(raw: bytes, max_items: int) -> list[Any]:
    """The items of a ``{"executions": [...]}`` batch body, not yet validated one by one."""
    body = decode_body(raw)
    if not isinstance(body, dict):
        raise InvalidRequest("body", 'request body must be a JSON object {"executions": [...]}')
    items = _required(body, "executions")
    if not isinstance(items, list):
        raise InvalidRequest("executions", "executions must be a list of dispatch bodies")
    if len(items) > max_items:
        raise InvalidRequest(
            "executions",
            f"executions holds {len(items)} items, more than the {max_items} allowed per batch"
            " (--max-batch-items); split it",
        )
    return items


def execution_request_from(body: Any) -> ExecutionRequest:
    """Validates one decoded dispatch body (a single POST's or a batch item); raises
    InvalidRequest naming the first bad field."""
    if not isinstance(body, dict):
        raise InvalidRequest("body", "request body must be a JSON object")
    execution_id = _string(body, "executionId")
    if len(execution_id) > MAX_EXECUTION_ID_LENGTH:
        raise InvalidRequest(
            "executionId", f"executionId must be at most {MAX_EXECUTION_ID_LENGTH} characters"
        )
    return ExecutionRequest(
        execution_id=ExecutionId(execution_id),
        task_uid=_string(body, "taskUid"),
        task=_task_name(body),
        epoch=_integer(body, "epoch", minimum=0),
        handler=_string(body, "handler"),
        payload=body.get("payload"),
        scheduled_at=_timestamp(body, "scheduledAt"),
        attempt=_integer(body, "attempt", minimum=1),
        timeout_seconds=_positive_number(body, "timeoutSeconds"),
        callback_url=_url(body, "callbackUrl"),
        callback_token=_string(body, "callbackToken"),
        callback_batch_url=_optional_url(body, "callbackBatchUrl"),
        deadline=_moment(body, "deadline") if _present(body, "deadline") else None,
        start_at=_moment(body, "startAt") if _present(body, "startAt") else None,
    )


def _present(body: dict[str, Any], field: str) -> bool:
    return body.get(field) is not None


def _required(body: dict[str, Any], field: str) -> Any:
    if not _present(body, field):
        raise InvalidRequest(field, f"{field} is required")
    return body[field]


def _string(body: dict[str, Any], field: str) -> str:
    value = _required(body, field)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(field, f"{field} must be a non-empty string")
    return value


def _integer(body: dict[str, Any], field: str, *, minimum: int) -> int:
    value = _required(body, field)
    # bool is an int subclass in Python but not a number in JSON's sense.
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidRequest(field, f"{field} must be an integer >= {minimum}")
    return value


def _positive_number(body: dict[str, Any], field: str) -> float:
    value = _required(body, field)
    valid = isinstance(value, int | float) and not isinstance(value, bool)
    if not valid or not math.isfinite(value) or value <= 0:
        raise InvalidRequest(field, f"{field} must be a number > 0")
    return float(value)


def _task_name(body: dict[str, Any]) -> str:
    value = _string(body, "task")
    namespace, slash, name = value.partition("/")
    if not slash or not namespace or not name or "/" in name:
        raise InvalidRequest("task", 'task must be "namespace/name"')
    return value


def _timestamp(body: dict[str, Any], field: str) -> str:
    value = _string(body, field)
    try:
        if not _RFC3339.match(value):
            raise ValueError(value)
        datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(
            field, f"{field} must be an RFC 3339 timestamp with a zone, e.g. 2024-05-01T12:00:00Z"
        ) from None
    return value


def _moment(body: dict[str, Any], field: str) -> datetime:
    return datetime.fromisoformat(_timestamp(body, field)).astimezone(UTC)


def _optional_url(body: dict[str, Any], field: str) -> str | None:
    return _url(body, field) if _present(body, field) else None


def _url(body: dict[str, Any], field: str) -> str:
    value = _string(body, field)
    if not _is_http_url(value):
        raise InvalidRequest(field, f"{field} must be an absolute http(s) URL")
    return value


@functools.lru_cache(maxsize=256)
def _is_http_url(value: str) -> bool:
    """An absolute http(s) URL; remembered, since every run a leader sends names the same
    callback URLs."""
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)

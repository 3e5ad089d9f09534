"""A Task's ``spec``, read once into the typed value the whole operator uses.

:func:`read_task_spec` is the one reader of a Task's spec: the engine's plans, the mirror's rows,
the callbacks' retry policy and the admission webhook all go through it, so each default and each
bound lives here once (and in the CRD schema, which ``tests/unit/test_spec_bounds.py`` keeps in
step with the constants below).

Every bound is chosen so that a value inside it is one the engine can compute with: fire times,
deadlines, retry delays, misfire windows and retention ages stay within what a ``datetime`` and
the database hold. What a schema cannot check (the schedule parses and ever fires, the time zone
is known on every replica) is checked here, by the code the engine runs.

Invariants:
- Pure and total: whatever JSON value the spec holds, :func:`read_task_spec` returns, and
  :func:`parse_task_spec` returns or raises :class:`~cadenza.core.fields.FieldError` naming the
  field; nothing else.
- A lenient read still gives a usable TaskSpec: each bad field takes its default (``schedule``
  None when the schedule or the time zone is bad) and every problem is listed. The engine never
  ticks a spec with problems; the mirror reports them as ``Ready=False``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping
from typing import Any

from cadenza.core import fields
from cadenza.core import schedule as schedule_
from cadenza.core.fields import FieldError, Integer
from cadenza.core.misfire import MisfirePolicy
from cadenza.core.modes import ExecutionMode
from cadenza.core.retry import RetryPolicy
from cadenza.core.strategies import Strategy

SCHEDULE_MAX_LENGTH = 256
TIME_ZONE_MAX_LENGTH = 64
HANDLER_MAX_LENGTH = 253
EXECUTORS_MAX_ITEMS = 32
EXECUTOR_NAME_MAX_LENGTH = 63
EXECUTOR_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
PAYLOAD_MAX_DEPTH = 20
"""Levels of nesting in ``spec.payload``. The database keeps a JSON document at most 32 levels
deep (MariaDB's limit), and the mirror stores the whole spec in one; a schema cannot bound it."""

DEFAULT_TIME_ZONE = "UTC"
DEFAULT_HANDLER = "default"
DEFAULT_MODE = ExecutionMode.PARALLEL
DEFAULT_STRATEGY = Strategy.ROUND_ROBIN
DEFAULT_MISFIRE = MisfirePolicy.FIRE_ONCE

MAX_CONCURRENT = Integer("maxConcurrent", 1, 1000)
TIMEOUT_SECONDS = Integer("timeoutSeconds", 1, 86_400, 300)
STARTING_DEADLINE_SECONDS = Integer("startingDeadlineSeconds", 1, 366 * 86_400)
"""At most 366 days: the misfire window is subtracted from "now"."""
MAX_MISFIRE_RUNS = Integer("maxMisfireRuns", 1, 100, 10)
WEIGHT = Integer("weight", 0, 1000, 1)
PRIORITY = Integer("priority", 0, 100, 0)
MAX_ATTEMPTS = Integer("maxAttempts", 1, 100, 1)
BACKOFF_SECONDS = Integer("backoffSeconds", 0, 3600, 10)
MAX_BACKOFF_SECONDS = Integer("maxBackoffSeconds", 0, 86_400, 300)
JITTER_PERCENT = Integer("jitterPercent", 0, 100, 20)
HISTORY_MAX_AGE_SECONDS = Integer("maxAgeSeconds", 60, 3650 * 86_400, 604_800)
"""At most 3650 days: the age is subtracted from the database's clock."""
HISTORY_MAX_RUNS = Integer("maxRuns", 1, 1_000_000, 1000)

INTEGERS: dict[str, Integer] = {
    "spec.maxConcurrent": MAX_CONCURRENT,
    "spec.timeoutSeconds": TIMEOUT_SECONDS,
    "spec.startingDeadlineSeconds": STARTING_DEADLINE_SECONDS,
    "spec.maxMisfireRuns": MAX_MISFIRE_RUNS,
    "spec.executors[].weight": WEIGHT,
    "spec.executors[].priority": PRIORITY,
    "spec.retry.maxAttempts": MAX_ATTEMPTS,
    "spec.retry.backoffSeconds": BACKOFF_SECONDS,
    "spec.retry.maxBackoffSeconds": MAX_BACKOFF_SECONDS,
    "spec.retry.jitterPercent": JITTER_PERCENT,
    "spec.history.maxAgeSeconds": HISTORY_MAX_AGE_SECONDS,
    "spec.history.maxRuns": HISTORY_MAX_RUNS,
}
"""Every integer field by its path in the CRD schema (``[]`` for a list's items)."""

SCHEDULE_FIELDS = frozenset({"spec.schedule", "spec.timeZone"})
TIMING_FIELDS = SCHEDULE_FIELDS | {
    "spec.suspend",
    "spec.startingDeadlineSeconds",
    "spec.misfirePolicy",
    "spec.maxMisfireRuns",
}
"""Fields that say when ticks fire; a manual run needs none of them."""

_EMPTY: Mapping[str, Any] = {}


@dataclasses.dataclass(frozen=True, slots=True)
class ExecutorRef:
    """One entry of ``spec.executors``."""

    name: str
    weight: int = 1
    priority: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class TaskSpec:
    """A Task's spec, typed and within bounds; made by :func:`read_task_spec`."""

    expression: str
    """``spec.schedule`` as written ("" when it is not a string of the allowed length)."""
    time_zone: str
    schedule: schedule_.Schedule | None
    """The parsed schedule; None only in a lenient read whose schedule or time zone is bad."""
    suspend: bool
    mode: ExecutionMode
    max_concurrent: int | None
    executors: tuple[ExecutorRef, ...]
    strategy: Strategy
    handler: str
    payload: Any
    timeout_seconds: int
    retry: RetryPolicy
    starting_deadline_seconds: int | None
    misfire: MisfirePolicy
    max_misfire_runs: int
    history_max_age_seconds: int
    history_max_runs: int


def parse_task_spec(spec: Any) -> TaskSpec:
    """The spec, or FieldError for its first problem (the admission webhook lists them all)."""
    parsed, problems = read_task_spec(spec)
    if problems:
        raise problems[0]
    return parsed


def read_task_spec(spec: Any) -> tuple[TaskSpec, tuple[FieldError, ...]]:
    """The spec with each bad field at its default, and every problem found (see the module
    docstring); never raises."""
    problems = fields.Problems()
    raw = problems.read(functools.partial(fields.mapping, spec, "spec"), _EMPTY)
    expression = problems.read(functools.partial(_expression, raw), "")
    time_zone = problems.read(functools.partial(_time_zone, raw), DEFAULT_TIME_ZONE)
    parsed_schedule = _schedule(expression, time_zone, problems) if expression else None
    mode = ExecutionMode(
        problems.read(
            functools.partial(_choice, raw, "executionMode", ExecutionMode, DEFAULT_MODE),
            DEFAULT_MODE.value,
        )
    )
    retry, retry_problems = read_retry(raw)
    history = problems.read(
        functools.partial(fields.mapping, raw.get("history"), "spec.history"), _EMPTY
    )
    for problem in retry_problems:
        problems.add(problem)
    parsed = TaskSpec(
        expression=expression,
        time_zone=time_zone,
        schedule=parsed_schedule,
        suspend=problems.read(functools.partial(_suspend, raw), False),
        mode=mode,
        max_concurrent=problems.read(functools.partial(_max_concurrent, raw, mode), None),
        executors=_executors(raw.get("executors"), problems),
        strategy=Strategy(
            problems.read(
                functools.partial(_choice, raw, "loadBalanceStrategy", Strategy, DEFAULT_STRATEGY),
                DEFAULT_STRATEGY.value,
            )
        ),
        handler=problems.read(functools.partial(_handler, raw), DEFAULT_HANDLER),
        payload=problems.read(functools.partial(_payload, raw.get("payload")), None),
        timeout_seconds=_integer(problems, TIMEOUT_SECONDS, raw, "spec"),
        retry=retry,
        starting_deadline_seconds=problems.read(
            functools.partial(STARTING_DEADLINE_SECONDS.read, raw, "spec"), None
        ),
        misfire=MisfirePolicy(
            problems.read(
                functools.partial(_choice, raw, "misfirePolicy", MisfirePolicy, DEFAULT_MISFIRE),
                DEFAULT_MISFIRE.value,
            )
        ),
        max_misfire_runs=_integer(problems, MAX_MISFIRE_RUNS, raw, "spec"),
        history_max_age_seconds=_integer(
            problems, HISTORY_MAX_AGE_SECONDS, history, "spec.history"
        ),
        history_max_runs=_integer(problems, HISTORY_MAX_RUNS, history, "spec.history"),
    )
    return parsed, tuple(problems.found)


def read_retry(spec: Any) -> tuple[RetryPolicy, tuple[FieldError, ...]]:
    """``spec.retry`` alone (the callbacks read only this), each bad field at its default."""
    problems = fields.Problems()
    raw = spec if isinstance(spec, Mapping) else {}
    retry = problems.read(functools.partial(fields.mapping, raw.get("retry"), "spec.retry"), _EMPTY)
    path = "spec.retry"
    backoff = _integer(problems, BACKOFF_SECONDS, retry, path)
    cap = _integer(problems, MAX_BACKOFF_SECONDS, retry, path)
    if cap < backoff:
        problems.add(
            FieldError(
                f"{path}.maxBackoffSeconds",
                f"must be greater than or equal to backoffSeconds ({backoff}), got {cap}"
                + ("" if "maxBackoffSeconds" in retry else " (the default)"),
            )
        )
        cap = backoff
    policy = RetryPolicy(
        max_attempts=_integer(problems, MAX_ATTEMPTS, retry, path),
        backoff_seconds=float(backoff),
        max_backoff_seconds=float(cap),
        jitter=_integer(problems, JITTER_PERCENT, retry, path) / 100,
    )
    return policy, tuple(problems.found)


def top_level_key(field: str) -> str:
    """``executors`` for ``spec.executors[2].name``: the key of ``spec`` a problem lies under
    ("" for ``spec`` itself)."""
    rest = field.removeprefix("spec").removeprefix(".")
    return re.split(r"[.\[]", rest, maxsplit=1)[0]


# -- one field each ----------------------------------------------------------------------------


def _integer(problems: fields.Problems, field: Integer, raw: Mapping[str, Any], path: str) -> int:
    assert field.default is not None
    return problems.read(functools.partial(field.read_required, raw, path), field.default)


def _expression(raw: Mapping[str, Any]) -> str:
    return fields.text(raw.get("schedule"), "spec.schedule", 1, SCHEDULE_MAX_LENGTH)


def _time_zone(raw: Mapping[str, Any]) -> str:
    value = raw.get("timeZone")
    if value is None:
        return DEFAULT_TIME_ZONE
    return fields.text(value, "spec.timeZone", 1, TIME_ZONE_MAX_LENGTH)


def _schedule(
    expression: str, time_zone: str, problems: fields.Problems
) -> schedule_.Schedule | None:
    try:
        return schedule_.parse_schedule(expression, time_zone)
    except schedule_.ScheduleError as error:
        errors = [error]
    # A bad zone stops the parse before the expression is read: parse in UTC to report both.
    if errors[0].field == "timeZone":
        try:
            schedule_.parse_schedule(expression, DEFAULT_TIME_ZONE)
        except schedule_.ScheduleError as also:
            errors.insert(0, also)
    for each in errors:
        reason = str(each).removeprefix(f"{each.field}: ")
        problems.add(FieldError(f"spec.{each.field}", reason))
    return None


def _suspend(raw: Mapping[str, Any]) -> bool:
    value = raw.get("suspend")
    return False if value is None else fields.boolean(value, "spec.suspend")


def _choice(
    raw: Mapping[str, Any], key: str, kind: type[ExecutionMode | Strategy | MisfirePolicy],
    default: ExecutionMode | Strategy | MisfirePolicy,
) -> str:  # fmt: skip
    value = raw.get(key)
    if value is None:
        return default.value
    return fields.choice(value, f"spec.{key}", tuple(member.value for member in kind))


def _max_concurrent(raw: Mapping[str, Any], mode: ExecutionMode) -> int | None:
    value = MAX_CONCURRENT.read(raw, "spec")
    if value is not None and mode is not ExecutionMode.PARALLEL:
        raise FieldError(
            "spec.maxConcurrent",
            "is only allowed when executionMode is Parallel (Sequential runs one at a time and"
            " Skip never overlaps); remove it or set executionMode: Parallel",
        )
    return value


def _handler(raw: Mapping[str, Any]) -> str:
    value = raw.get("handler")
    if value is None:
        return DEFAULT_HANDLER
    return fields.text(value, "spec.handler", 1, HANDLER_MAX_LENGTH)


def _payload(raw: Any) -> Any:
    # Level by level with a cutoff, not recursion: a payload may nest 10,000 levels deep.
    level = [raw] if isinstance(raw, Mapping | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > PAYLOAD_MAX_DEPTH:
            raise FieldError(
                "spec.payload",
                f"nests more than {PAYLOAD_MAX_DEPTH} levels of objects and arrays; flatten it"
                " (the database keeps JSON at most 32 levels deep)",
            )
        level = [
            child
            for value in level
            for child in (value.values() if isinstance(value, Mapping) else value)
            if isinstance(child, Mapping | list)
        ]
    return raw


def _executors(raw: Any, problems: fields.Problems) -> tuple[ExecutorRef, ...]:
    path = "spec.executors"
    if not isinstance(raw, list) or not raw:
        got = "none" if raw is None or raw == [] else fields.show(raw)
        problems.add(FieldError(path, f"must name at least one Executor, got {got}"))
        return ()
    if len(raw) > EXECUTORS_MAX_ITEMS:
        problems.add(
            FieldError(path, f"must name at most {EXECUTORS_MAX_ITEMS} Executors, got {len(raw)}")
        )
    refs: dict[str, ExecutorRef] = {}
    for index, entry in enumerate(raw[:EXECUTORS_MAX_ITEMS]):
        ref = problems.read(functools.partial(_executor, entry, f"{path}[{index}]"), None)
        if ref is not None and ref.name in refs:
            problems.add(
                FieldError(
                    f"{path}[{index}]",
                    f'names Executor "{ref.name}" twice; list each Executor once',
                )
            )
        elif ref is not None:
            refs[ref.name] = ref
    if refs and all(ref.weight == 0 for ref in refs.values()):
        problems.add(
            FieldError(
                path, "at least one executor must have weight > 0, or no run could be placed"
            )
        )
    return tuple(refs.values())


def _executor(raw: Any, path: str) -> ExecutorRef:
    entry = fields.mapping(raw, path)
    name = fields.text(
        entry.get("name"), f"{path}.name", 1, EXECUTOR_NAME_MAX_LENGTH, EXECUTOR_NAME
    )
    return ExecutorRef(name, WEIGHT.read_required(entry, path), PRIORITY.read_required(entry, path))

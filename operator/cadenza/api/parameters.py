"""The REST API's query, header and path parameters, as pydantic models: the handlers read a
request's parameters with :func:`read`, and :mod:`cadenza.api.openapi` describes each operation's
parameters from the same models, so the document and the parsing never disagree.

A model is one set of parameters that travels together (a page, the run filters). Its fields are
named as clients spell the parameters; ``IN`` says where they are sent, except that a field named
in a route's template (``{namespace}``) is a path parameter of that route.

Invariants: the spellings accepted are exactly those of the original hand-written parsing (a
``limit`` of ASCII digits only, booleans ``true`` or ``false`` only, RFC 3339 times with a zone);
a refusal is a 400 whose ``field`` names the parameter as the client spelled it; an empty value is
no value where it always was (``state=``, an empty ``Idempotency-Key``); unknown parameters are
ignored.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args, get_origin

from multidict import MultiMapping
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema

from cadenza.api import errors
from cadenza.core.transitions import RunStatus
from cadenza.executors import endpoints
from cadenza.store.executions import Origin

M = TypeVar("M", bound="Parameters")
MAX_LIMIT = 500
MAX_ID = 2**63 - 1
CURSOR_PREFIX = "v1:"
StateName = Literal["active", "suspended", "failing", "running", "invalid"]
STATES: tuple[str, ...] = get_args(StateName)
_DIGITS = re.compile(r"[0-9]{1,6}")
_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")


def read(model: type[M], values: Mapping[str, str]) -> M:
    """``values`` (a query string, the headers or the path's parts) read as ``model``; 400 naming
    the parameter otherwise. A repeatable parameter (a tuple field) takes every value given,
    any other the first."""
    data: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key not in values:
            continue
        if get_origin(field.annotation) is tuple and isinstance(values, MultiMapping):
            data[key] = values.getall(key)
        else:
            data[key] = values[key]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise errors.from_validation(exc) from None


# -- the rules of the values --------------------------------------------------------------------


def positive_id(raw: str) -> int:
    """A run's id: 1 to 2^63-1 in ASCII digits."""
    if not (0 < len(raw) <= 19 and raw.isascii() and raw.isdigit() and 0 < int(raw) <= MAX_ID):
        raise ValueError(f"must be a positive whole number, got {raw[:40]!r}")
    return int(raw)


def an_instance_id(raw: str) -> str:
    """An executor instance's id, as its registration gave it."""
    if not endpoints.INSTANCE_ID.fullmatch(raw):
        raise ValueError(
            f"{raw[:80]!r} is not an instance id: 1-63 letters, digits, '-', '_' or '.',"
            " starting and ending with a letter or digit"
        )
    return raw


def encode_cursor(before: int) -> str:
    return base64.urlsafe_b64encode(f"{CURSOR_PREFIX}{before}".encode()).decode().rstrip("=")


def _cursor(raw: str) -> int:
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        text = ""
    if not text.startswith(CURSOR_PREFIX):
        raise ValueError("is not a cursor this API gave out; start again without it")
    return positive_id(text.removeprefix(CURSOR_PREFIX))


def _limit(raw: str) -> int:
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise ValueError(f"must be a whole number from 1 to {MAX_LIMIT}, got {raw!r}")
    return int(raw)


def _boolean(raw: str) -> bool:
    if raw not in ("true", "false"):
        raise ValueError(f"must be true or false, got {raw!r}")
    return raw == "true"


def _state(raw: str) -> str | None:
    if raw and raw not in STATES:
        raise ValueError(f"must be one of {', '.join(STATES)}, got {raw!r}")
    return raw or None


def _time(raw: str) -> datetime:
    try:
        value: datetime | None = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
    except (ValueError, OverflowError):
        value = None
    if value is None or value.tzinfo is None or not 1970 <= value.year <= 9999:
        raise ValueError(f"must be an RFC 3339 time with a zone, 1970-9999, got {raw[:40]!r}")
    return value


def _idempotency_key(raw: str) -> str | None:
    if raw and not _KEY.fullmatch(raw):
        raise ValueError("must be 1-128 printable ASCII characters")
    return raw or None


class _AnyOf:
    """A comma-separated or repeated parameter whose every value is one of ``allowed``."""

    def __init__(self, allowed: Iterable[str]) -> None:
        self.allowed = tuple(allowed)

    def __call__(self, raw: list[str] | str) -> tuple[str, ...]:
        given = [raw] if isinstance(raw, str) else raw
        values = tuple(v for text in given for v in text.split(",") if v)
        wrong = [v for v in values if v not in self.allowed]
        if wrong:
            allowed = ", ".join(sorted(self.allowed))
            raise ValueError(f"unknown value {wrong[0][:40]!r}; one of {allowed}")
        return values

    def schema(self) -> WithJsonSchema:
        return WithJsonSchema({"type": "array", "items": {"type": "string", "enum": self.allowed}})


_STATUSES = _AnyOf(s.value for s in RunStatus)
_ORIGINS = _AnyOf(o.value for o in Origin)
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT), BeforeValidator(_limit)]
Time = Annotated[datetime | None, BeforeValidator(_time)]


# -- the sets -----------------------------------------------------------------------------------


class Parameters(BaseModel):
    """A set of parameters; unknown ones are ignored, as they always were."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    IN: ClassVar[str] = "query"


class Scope(Parameters):
    namespace: str | None = Field(
        None, description="The namespace; default: the API's default namespace."
    )


class Named(Parameters):
    IN = "path"
    name: str = Field(
        description="The resource's name; an original name (`test_task`) finds `test-task`. "
        "For the DELETE of an Executor route: the instance id to deregister."
    )


class Instance(Parameters):
    IN = "path"
    instance_id: Annotated[str, BeforeValidator(an_instance_id)] = Field(
        description="The id the executor instance registered with."
    )


class RunPath(Parameters):
    IN = "path"
    id: Annotated[int, Field(ge=1, le=MAX_ID), BeforeValidator(positive_id)] = Field(
        description="The run's id."
    )


class AllNamespaces(Parameters):
    allNamespaces: Annotated[bool, BeforeValidator(_boolean)] = Field(
        False,
        description="`true`: list in every namespace (needs `list` on tasks cluster-wide);"
        " refused beside a namespace.",
    )


class TaskListQuery(Parameters):
    limit: Limit = Field(100, description="Tasks a page holds at the most.")
    state: Annotated[StateName | None, BeforeValidator(_state)] = Field(
        None, description="Only the Tasks in this state."
    )
    labelSelector: str = Field("", description="A Kubernetes label selector (`group=nightly`).")
    continue_: str = Field(
        "", alias="continue", description="The previous page's `continue`, for the next page."
    )


class HistoryFilter(Parameters):
    status: Annotated[tuple[str, ...], BeforeValidator(_STATUSES), _STATUSES.schema()] = Field(
        (), description="Only runs of these statuses (comma-separated, or repeated)."
    )
    origin: Annotated[tuple[str, ...], BeforeValidator(_ORIGINS), _ORIGINS.schema()] = Field(
        (), description="Only runs of these origins (comma-separated, or repeated)."
    )
    since: Time = Field(None, description="Runs requested at or after this time (RFC 3339).")
    until: Time = Field(None, description="Runs requested before this time (RFC 3339).")


class AcrossTasks(HistoryFilter):
    task: str = Field("", description="Only the runs of the Task of this (Kubernetes) name.")


class Page(Parameters):
    limit: Limit = Field(50, description="Runs a page holds at the most.")
    cursor: Annotated[int | None, BeforeValidator(_cursor), WithJsonSchema({"type": "string"})] = (
        Field(None, description="The previous page's `cursor`, for older runs (opaque).")
    )


class TriggerHeaders(Parameters):
    IN = "header"
    key: Annotated[str | None, BeforeValidator(_idempotency_key)] = Field(
        None,
        alias="Idempotency-Key",
        pattern=_KEY.pattern,
        description="Fires once per key: the same key again answers with the same run.",
    )

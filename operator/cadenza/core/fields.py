"""Reading one field of a resource's spec: typed, bounded, or an error that names the field.

The CRD schemas check types and bounds when an object is written. The operator checks them again
where it reads the object, with these readers, because an object stored before a bound existed
(or under an older CRD) reaches the engine all the same, and a value the engine cannot compute
with must stop at the object it belongs to instead of failing the leader.

Invariants: pure; a reader returns a value of its type within its bounds or raises
:class:`FieldError`, and nothing else, whatever JSON value it is given; an error's text starts
with the field's path (``spec.retry.maxAttempts: ...``), the form ``kubectl`` users know.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

_SHOWN_CHARACTERS = 80


class FieldError(ValueError):
    """A field of a resource's spec holds a value the operator cannot use. ``field`` is its path
    (``spec.timeoutSeconds``), ``reason`` what is wrong and how to fix it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    # A value, as the plans holding it are: two reads of one spec give equal plans.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FieldError):
            return NotImplemented
        return (self.field, self.reason) == (other.field, other.reason)

    def __hash__(self) -> int:
        return hash((self.field, self.reason))


@dataclasses.dataclass(frozen=True)
class Integer:
    """An integer field with its bounds and its CRD default (None: the field is optional)."""

    key: str
    low: int
    high: int
    default: int | None = None

    def read(self, spec: Mapping[str, Any], parent: str) -> int | None:
        raw = spec.get(self.key)
        if raw is None:
            return self.default
        return whole_number(raw, f"{parent}.{self.key}", self.low, self.high)

    def read_required(self, spec: Mapping[str, Any], parent: str) -> int:
        """As :meth:`read`, for a field with a default (so never None)."""
        value = self.read(spec, parent)
        if value is None:
            raise FieldError(f"{parent}.{self.key}", "is required")
        return value


def whole_number(raw: Any, field: str, low: int, high: int) -> int:
    # bool is an int in Python, never in JSON; an integral float is what some clients send for
    # an integer (1.0), and the API server accepts it as one.
    if isinstance(raw, float) and math.isfinite(raw) and raw.is_integer():
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise FieldError(field, f"must be a whole number, got {show(raw)}")
    if not low <= raw <= high:
        raise FieldError(field, f"must be between {low} and {high}, got {show(raw)}")
    return raw


def choice(raw: Any, field: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(raw, str) or raw not in allowed:
        raise FieldError(field, f"must be one of {', '.join(allowed)}, got {show(raw)}")
    return raw


def text(
    raw: Any, field: str, min_length: int, max_length: int, pattern: re.Pattern[str] | None = None
) -> str:
    if raw is None:
        raise FieldError(field, "is required")
    if not isinstance(raw, str):
        raise FieldError(field, f"must be a string, got {show(raw)}")
    if not min_length <= len(raw) <= max_length:
        raise FieldError(
            field, f"must be {min_length} to {max_length} characters long, got {len(raw)}"
        )
    if pattern is not None and not pattern.fullmatch(raw):
        raise FieldError(field, f"{show(raw)} does not match {pattern.pattern}")
    return raw


def boolean(raw: Any, field: str) -> bool:
    if not isinstance(raw, bool):
        raise FieldError(field, f"must be true or false, got {show(raw)}")
    return raw


def mapping(raw: Any, field: str) -> Mapping[str, Any]:
    """An object field; missing (None) reads as empty, so nested defaults apply."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise FieldError(field, f"must be an object, got {show(raw)}")
    return raw


def show(value: Any) -> str:
    """``value`` as it would appear in YAML or JSON, shortened for a message. Never raises: a
    huge integer or a non-JSON value is described instead."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    try:
        shown = json.dumps(value, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError):
        shown = f"a value of type {type(value).__name__}"
    if len(shown) > _SHOWN_CHARACTERS:
        shown = shown[: _SHOWN_CHARACTERS - 3] + "..."
    return shown


class Problems:
    """Collects the field errors of a lenient read, in which each bad field takes its default
    so the rest of the object can still be read and reported at once."""

    def __init__(self) -> None:
        self.found: list[FieldError] = []

    def read(self, reader: Callable[[], T], fallback: T) -> T:
        try:
            return reader()
        except FieldError as error:
            self.found.append(error)
            return fallback

    def add(self, error: FieldError) -> None:
        self.found.append(error)

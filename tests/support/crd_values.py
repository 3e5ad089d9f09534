"""Hypothesis strategies for the values a CRD's schema accepts, derived from the YAML itself.

Every generated value satisfies the schema's types, enums, bounds, lengths, item counts and
patterns, so the property tests drive exactly the space ``kubectl apply`` lets through (CEL rules
aside: a value a CEL rule would refuse is still generated, and the readers must name it). When a
bound in ``crds/`` changes, the generated space follows. A few fields whose schema says little
(``spec.schedule``, ``spec.timeZone``, the label keys that only a CEL rule checks) get strategies
of their own that hit what the operator parses.
"""

from __future__ import annotations

import json
import string
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

CRDS = Path(__file__).resolve().parents[2] / "crds"
_LONGEST_TEXT = 40
_MOST_ITEMS = 6
_MOST_PROPERTIES = 4


def spec_schema(kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / f"{kind}.yaml").read_text())
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"])


def json_values() -> st.SearchStrategy[Any]:
    """Any JSON value the API server can hold (int64 integers, finite floats)."""
    scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    scalars |= st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=_LONGEST_TEXT)
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
        ),
        max_leaves=12,
    )


def from_schema(
    schema: Mapping[str, Any],
    path: str = "spec",
    overrides: Mapping[str, st.SearchStrategy[Any]] | None = None,
) -> st.SearchStrategy[Any]:
    """Values valid against ``schema``; ``overrides`` replace the strategy at a path."""
    overrides = overrides or {}
    if path in overrides:
        return overrides[path]
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**63)), schema.get("maximum", 2**63 - 1))
    if kind == "boolean":
        return st.booleans()
    if kind == "string":
        return _strings(schema)
    if kind == "array":
        return _arrays(schema, path, overrides)
    if kind == "object":
        return _objects(schema, path, overrides)
    return json_values()  # x-kubernetes-preserve-unknown-fields


def _strings(schema: Mapping[str, Any]) -> st.SearchStrategy[str]:
    low, high = schema.get("minLength", 0), schema.get("maxLength", _LONGEST_TEXT)
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True).filter(
            lambda s: low <= len(s) <= high
        )
    # The longest strings matter (column widths): reach the maximum length sometimes.
    text = st.text(min_size=low, max_size=min(high, _LONGEST_TEXT))
    return text | st.text(min_size=high, max_size=high) if high <= 1024 else text


def _arrays(
    schema: Mapping[str, Any], path: str, overrides: Mapping[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[list[Any]]:
    items = from_schema(schema["items"], f"{path}[]", overrides)
    low = schema.get("minItems", 0)
    high = min(schema.get("maxItems", _MOST_ITEMS), max(low, _MOST_ITEMS))
    keys = schema.get("x-kubernetes-list-map-keys")
    if keys:
        return st.lists(items, min_size=low, max_size=high, unique_by=lambda i: i.get(keys[0]))
    return st.lists(items, min_size=low, max_size=high)


def _objects(
    schema: Mapping[str, Any], path: str, overrides: Mapping[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    properties: Mapping[str, Any] = schema.get("properties", {})
    if not properties:
        values = from_schema(schema.get("additionalProperties") or {}, f"{path}{{}}", overrides)
        keys = overrides.get(f"{path}{{keys}}", st.text(min_size=1, max_size=20))
        return st.dictionaries(keys, values, max_size=_MOST_PROPERTIES)
    required = set(schema.get("required", []))
    return st.fixed_dictionaries(
        {
            k: from_schema(v, f"{path}.{k}", overrides)
            for k, v in properties.items()
            if k in required
        },
        optional={
            k: from_schema(v, f"{path}.{k}", overrides)
            for k, v in properties.items()
            if k not in required
        },
    )


# -- what the schema leaves to the operator -----------------------------------------------------

_ZONES = sorted(zoneinfo.available_timezones())


def time_zones() -> st.SearchStrategy[str]:
    """Known zones mostly, DST-rich ones often, and names the zone check must refuse."""
    known = st.sampled_from(_ZONES)
    dst = st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC"])
    odd = st.sampled_from(["Mars/Olympus", "localtime", "posixrules", "Etc/GMT+99", "utc"])
    return known | dst | odd | st.from_regex(r"[A-Za-z][A-Za-z0-9_+\-]{0,20}", fullmatch=True)


def _cron_field(low: int, high: int, names: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    number = st.integers(low - 1, high + 1).map(str)
    step = st.integers(0, high - low + 2).map(str)
    single = number | st.sampled_from(["*", "?", *names, "L", ""])
    ranged = st.tuples(number, number).map("-".join)
    stepped = st.tuples(single | ranged, step).map("/".join)
    part = single | ranged | stepped
    return st.lists(part, min_size=1, max_size=3).map(",".join)


def _sound_cron_field(low: int, high: int) -> st.SearchStrategy[str]:
    """Fields that parse: in-range values, ordered ranges, steps within the span."""
    value = st.integers(low, high)
    ranged = st.tuples(value, value).map(lambda ab: f"{min(ab)}-{max(ab)}")
    stepped = st.integers(1, high - low).map("*/{}".format)
    part = st.just("*") | value.map(str) | ranged | stepped
    return st.lists(part, min_size=1, max_size=2).map(",".join)


def _sound_cron() -> st.SearchStrategy[str]:
    five = st.tuples(*(_sound_cron_field(lo, hi) for lo, hi in _FIVE)).map(" ".join)
    six = st.tuples(_sound_cron_field(0, 59), five).map(" ".join)
    return five | six


_FIVE = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_SECONDS, _MINUTES, _HOURS = _cron_field(0, 59), _cron_field(0, 59), _cron_field(0, 23)
_DAYS = _cron_field(1, 31)
_MONTHS = _cron_field(1, 12, ("JAN", "feb", "DEC"))
_WEEKDAYS = _cron_field(0, 7, ("SUN", "mon", "SAT"))
_UNITS = ["s", "m", "h", "ms", "d", ""]


def schedules() -> st.SearchStrategy[str]:
    """Cron expressions (5 and 6 fields, in range or just outside), macros, ``@every`` with any
    duration up to absurd ones, and arbitrary text: all of it within the schema's length."""
    five = st.tuples(_MINUTES, _HOURS, _DAYS, _MONTHS, _WEEKDAYS).map(" ".join)
    six = st.tuples(_SECONDS, _MINUTES, _HOURS, _DAYS, _MONTHS, _WEEKDAYS).map(" ".join)
    macros = st.sampled_from(
        ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly", "@often"]
    )
    amount = st.integers(0, 10**30).map(str) | st.sampled_from(["1.5", ".5", "0.25", "8784"])
    duration = st.lists(st.tuples(amount, st.sampled_from(_UNITS)).map("".join), min_size=1,
                        max_size=3).map("".join)  # fmt: skip
    every = duration.map("@every {}".format)
    fixed = st.sampled_from(
        ["0 0 29 2 *", "0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6 *", "* * * * * *"]
    )
    text = st.text(string.printable + "µ²٣\u00a0", max_size=_LONGEST_TEXT)
    anything = five | six | macros | every | fixed | text
    return (_sound_cron() | anything).filter(lambda s: 1 <= len(s) <= 256)


def task_specs() -> st.SearchStrategy[dict[str, Any]]:
    """Task specs within the Task CRD's schema."""
    return from_schema(  # type: ignore[no-any-return]
        spec_schema("task"),
        overrides={"spec.schedule": schedules(), "spec.timeZone": time_zones()},
    )


_LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)


def label_keys() -> st.SearchStrategy[str]:
    return st.from_regex(_LABEL_KEY, fullmatch=True).filter(lambda s: len(s) <= 317)


def executor_specs() -> st.SearchStrategy[dict[str, Any]]:
    """Executor specs within the Executor CRD's schema."""
    return from_schema(  # type: ignore[no-any-return]
        spec_schema("executor"),
        overrides={"spec.selector.matchLabels{keys}": label_keys()},
    )


def dumps(value: Any) -> str:
    """For failure messages: the generated value as the YAML/JSON a user would write."""
    return json.dumps(value, ensure_ascii=False, default=str)

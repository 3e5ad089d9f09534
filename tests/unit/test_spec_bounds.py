"""The operator's readers and the CRD schemas agree on every bound and default.

The schema refuses at ``kubectl apply`` time; the readers (``cadenza.core.taskspec``,
``cadenza.executors.spec``) refuse what reaches the engine anyway. If the two drift, either the
API server stores a value the engine refuses (a Task that never runs) or the engine accepts one it
was never tested with; so the constants are compared with the YAML here, field by field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cadenza.core import schedule, taskspec
from cadenza.core.misfire import MisfirePolicy
from cadenza.core.modes import ExecutionMode
from cadenza.core.strategies import Strategy
from cadenza.executors import spec as executor_spec
from cadenza.kube import views

CRDS = Path(__file__).resolve().parents[2] / "crds"


def spec_schema(kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / f"{kind}.yaml").read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return dict(schema["properties"]["spec"])


def field(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """The sub-schema at ``spec.a.b`` or ``spec.list[].c``."""
    node = schema
    for part in path.removeprefix("spec.").split("."):
        node = node["properties"][part.removesuffix("[]")]
        if part.endswith("[]"):
            node = node["items"]
    return node


@pytest.mark.parametrize(("kind", "integers"), [
    ("task", taskspec.INTEGERS), ("executor", executor_spec.INTEGERS),
])  # fmt: skip
def test_every_integer_field_has_the_readers_bounds_and_default(
    kind: str, integers: dict[str, Any]
) -> None:
    schema = spec_schema(kind)
    for path, reader in integers.items():
        crd = field(schema, path)
        assert crd["type"] == "integer", path
        assert (crd.get("minimum"), crd.get("maximum"), crd.get("default")) == (
            reader.low,
            reader.high,
            reader.default,
        ), path


def walk_integers(schema: dict[str, Any], path: str) -> list[str]:
    found = []
    for name, sub in schema.get("properties", {}).items():
        child = f"{path}.{name}"
        if sub.get("type") == "integer":
            found.append(child)
        found += walk_integers(sub, child)
        if "items" in sub:
            found += walk_integers(sub["items"], f"{child}[]")
    return found


@pytest.mark.parametrize(("kind", "integers"), [
    ("task", taskspec.INTEGERS), ("executor", executor_spec.INTEGERS),
])  # fmt: skip
def test_every_integer_of_the_spec_is_bounded_and_read(kind: str, integers: dict[str, Any]) -> None:
    schema = spec_schema(kind)
    paths = walk_integers(schema, "spec")
    assert sorted(paths) == sorted(integers)
    for path in paths:
        crd = field(schema, path)
        assert "minimum" in crd and "maximum" in crd, f"{path} is unbounded"


def test_every_string_of_the_task_spec_is_bounded_as_the_reader_bounds_it() -> None:
    schema = spec_schema("task")
    assert field(schema, "spec.schedule")["maxLength"] == taskspec.SCHEDULE_MAX_LENGTH
    assert field(schema, "spec.timeZone")["maxLength"] == taskspec.TIME_ZONE_MAX_LENGTH
    assert field(schema, "spec.handler")["maxLength"] == taskspec.HANDLER_MAX_LENGTH
    assert field(schema, "spec.handler")["default"] == taskspec.DEFAULT_HANDLER
    assert field(schema, "spec.timeZone")["default"] == taskspec.DEFAULT_TIME_ZONE
    executors = field(schema, "spec.executors")
    assert executors["maxItems"] == taskspec.EXECUTORS_MAX_ITEMS
    name = field(schema, "spec.executors[].name")
    assert name["maxLength"] == taskspec.EXECUTOR_NAME_MAX_LENGTH
    assert name["pattern"] == f"^{taskspec.EXECUTOR_NAME.pattern}$"


def test_the_enums_are_the_engines() -> None:
    schema = spec_schema("task")
    for path, kind, default in [
        ("spec.executionMode", ExecutionMode, taskspec.DEFAULT_MODE),
        ("spec.loadBalanceStrategy", Strategy, taskspec.DEFAULT_STRATEGY),
        ("spec.misfirePolicy", MisfirePolicy, taskspec.DEFAULT_MISFIRE),
    ]:
        crd = field(schema, path)
        assert crd["enum"] == [member.value for member in kind], path
        assert crd["default"] == default.value, path
    scheme = field(spec_schema("executor"), "spec.scheme")
    assert tuple(scheme["enum"]) == executor_spec.SCHEMES


def test_the_executor_strings_match_the_readers_patterns() -> None:
    schema = spec_schema("executor")
    path = field(schema, "spec.healthCheck.path")
    assert path["maxLength"] == executor_spec.PATH_MAX_LENGTH
    # A CEL string literal in single quotes escapes the pattern's own quote.
    cel = executor_spec.HEALTH_PATH.pattern.replace("'", "\\'")
    rules = [rule["rule"] for rule in path["x-kubernetes-validations"]]
    assert f"self.matches('^{cel}$')" in rules
    secret = field(schema, "spec.tokenSecretRef.name")
    assert secret["pattern"] == f"^{executor_spec.SECRET_NAME.pattern}$"
    key = field(schema, "spec.tokenSecretRef.key")
    assert key["pattern"] == f"^{executor_spec.SECRET_KEY.pattern}$"


def test_the_documented_every_bound_is_the_parsers() -> None:
    description = " ".join(field(spec_schema("task"), "spec.schedule")["description"].split())
    hours = schedule.MAX_EVERY_SECONDS // 3600
    assert f"from 1s to {hours}h = 366 days" in description


def test_the_weight_annotation_takes_the_weights_bound() -> None:
    assert field(spec_schema("task"), "spec.executors[].weight")["maximum"] == views.WEIGHT_MAX

"""Task bodies to Task objects, without I/O: the original system's spellings, Cadenza's, the
naming rule, and a bad field named as the client spelled it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from cadenza.api import errors, mapping
from cadenza.api.models import TaskBody, TaskFields
from cadenza.core.fields import FieldError

BRIEF = {
    "name": "test_task",
    "cron_expression": "*/10 * * * * *",
    "execution_mode": "parallel",
    "load_balance_strategy": "round_robin",
}


def task_of(body: dict[str, Any]) -> dict[str, Any]:
    return mapping.manifest(TaskBody.model_validate(body), "team", "default")


def test_the_brief_body_becomes_test_task_with_its_original_name() -> None:
    task = task_of(BRIEF)
    assert task["metadata"] == {
        "name": "test-task",
        "namespace": "team",
        "annotations": {"cadenza.dev/original-name": "test_task"},
    }
    assert task["spec"] == {
        "schedule": "*/10 * * * * *",
        "executionMode": "Parallel",
        "loadBalanceStrategy": "RoundRobin",
        "executors": [{"name": "default"}],
    }
    mapping.check(task["spec"], set(BRIEF))


@pytest.mark.parametrize(
    ("original", "cadenza"),
    [
        ("parallel", "Parallel"),
        ("sequential", "Sequential"),
        ("skip", "Skip"),
        ("Sequential", "Sequential"),
    ],
)
def test_execution_modes_in_both_spellings(original: str, cadenza: str) -> None:
    assert task_of({**BRIEF, "execution_mode": original})["spec"]["executionMode"] == cadenza
    body = {"name": "t", "schedule": "@hourly", "executionMode": original}
    assert task_of(body)["spec"]["executionMode"] == cadenza


@pytest.mark.parametrize(
    ("original", "cadenza"),
    [
        ("round_robin", "RoundRobin"),
        ("weighted", "Weighted"),
        ("random", "Random"),
        ("sticky", "Sticky"),
        ("least_loaded", "LeastLoaded"),
        ("LeastLoaded", "LeastLoaded"),
    ],
)
def test_strategies_in_both_spellings(original: str, cadenza: str) -> None:
    spec = task_of({**BRIEF, "load_balance_strategy": original})["spec"]
    assert spec["loadBalanceStrategy"] == cadenza


def test_optional_fields_map_to_the_spec() -> None:
    task = task_of(
        {
            **BRIEF,
            "executors": ["a", {"name": "b", "weight": 3, "priority": 1}],
            "handler": "echo",
            "payload": {"k": [1, 2]},
            "time_zone": "Europe/Berlin",
            "timeout_seconds": 60,
            "retries": 2,
            "enabled": False,
            "description": "demo",
            "labels": {"team": "x"},
        }
    )
    assert task["spec"] == {
        "schedule": "*/10 * * * * *",
        "executionMode": "Parallel",
        "loadBalanceStrategy": "RoundRobin",
        "timeZone": "Europe/Berlin",
        "handler": "echo",
        "payload": {"k": [1, 2]},
        "timeoutSeconds": 60,
        "suspend": True,
        "retry": {"maxAttempts": 3},
        "executors": [{"name": "a"}, {"name": "b", "weight": 3, "priority": 1}],
    }
    assert task["metadata"]["annotations"]["cadenza.dev/description"] == "demo"
    assert task["metadata"]["labels"] == {"team": "x"}


def test_a_patch_fragment_merges_retry_one_level_and_replaces_the_rest() -> None:
    current = {"schedule": "@hourly", "retry": {"backoffSeconds": 5}, "payload": {"a": 1}}
    fragment = mapping.spec_fragment(TaskFields.model_validate({"retries": 1, "payload": {"b": 2}}))
    assert mapping.merged(current, fragment) == {
        "schedule": "@hourly",
        "retry": {"backoffSeconds": 5, "maxAttempts": 2},
        "payload": {"b": 2},
    }


@pytest.mark.parametrize(
    ("original", "kube"),
    [("test_task", "test-task"), ("Nightly_Report", "nightly-report"), ("a.b", "a.b")],
)
def test_naming_rule(original: str, kube: str) -> None:
    assert mapping.kube_name(original) == kube


@pytest.mark.parametrize("bad", ["", "_x", "x_", "a b", "ü", "x" * 254, "a..b"])
def test_names_that_cannot_become_task_names_are_refused(bad: str) -> None:
    with pytest.raises(FieldError) as caught:
        mapping.kube_name(bad)
    assert caught.value.field == "name"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**BRIEF, "cron_expression": "*/10 * *"}, "cron_expression"),
        ({"name": "t", "schedule": "61 * * * *"}, "schedule"),
        ({**BRIEF, "time_zone": "Mars/Olympus"}, "time_zone"),
        ({**BRIEF, "timeZone": "Mars/Olympus"}, "timeZone"),
        ({**BRIEF, "timeout_seconds": 0}, "timeout_seconds"),
        ({**BRIEF, "executors": [{"name": "Bad_Name"}]}, "executors[0].name"),
        ({**BRIEF, "execution_mode": "sequential", "maxConcurrent": 2}, "maxConcurrent"),
        ({**BRIEF, "payload": [[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]}, "payload"),
    ],
)
def test_a_spec_the_engine_cannot_run_is_refused_naming_the_body_field(
    body: dict[str, Any], field: str
) -> None:
    task = task_of(body)
    with pytest.raises(FieldError) as caught:
        mapping.check(task["spec"], set(body))
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**BRIEF, "execution_mode": "parallel_ish"}, "execution_mode"),
        ({**BRIEF, "load_balance_strategy": "fastest"}, "load_balance_strategy"),
        ({**BRIEF, "retries": "3"}, "retries"),
        ({**BRIEF, "enabled": 1}, "enabled"),
        ({**BRIEF, "name": 5}, "name"),
        ({**BRIEF, "unknown": 1}, "unknown"),
        ({**BRIEF, "schedule": "@hourly"}, "schedule"),
        ({"cron_expression": "@hourly"}, "name"),
        ({"name": "t"}, "cron_expression"),
        ({**BRIEF, "executors": [{"weight": 1}]}, "executors.0.name"),
        ({**BRIEF, "executors": [7]}, "executors.0"),
        ({**BRIEF, "retry": {"maxAttempts": "2"}}, "retry.maxAttempts"),
    ],
)
def test_malformed_bodies_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TaskBody.model_validate(body)
    problem = errors.from_validation(caught.value)
    assert problem.status == 400
    assert problem.field == field


def test_next_fire_times_follow_the_schedule_and_stop_when_suspended() -> None:
    now = datetime(2025, 1, 9, 1, 41, 43, tzinfo=UTC)
    spec = {"schedule": "*/10 * * * * *", "executors": [{"name": "x"}]}
    times = mapping.next_fire_times(spec, now)
    assert [t.second for t in times] == [50, 0, 10, 20, 30]
    assert mapping.next_fire_times({**spec, "suspend": True}, now) == []
    assert mapping.next_fire_times({**spec, "schedule": "nonsense"}, now) == []

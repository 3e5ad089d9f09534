"""The REST API's query, header and path parameters: one pydantic model a set, which both parses
the request and is the OpenAPI document's ``parameters``; the spellings accepted and the fields
named on refusal are the API's contract."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from multidict import CIMultiDict, MultiDict

from cadenza.api import openapi, parameters
from cadenza.api.errors import Problem
from cadenza.api.parameters import (
    AllNamespaces,
    HistoryFilter,
    Instance,
    Page,
    RunPath,
    TaskListQuery,
    TriggerHeaders,
)


def _models(base: type[parameters.Parameters]) -> list[type[parameters.Parameters]]:
    found = []
    for model in base.__subclasses__():
        found += [model, *_models(model)]
    return found


def _documented() -> list[tuple[str, dict[str, Any]]]:
    """Every (path, parameter) of the document, path-wide and per operation."""
    found = []
    for path, item in openapi.document()["paths"].items():
        ops = [item, *(op for key, op in item.items() if key != "parameters")]
        found += [(path, p) for op in ops for p in op.get("parameters", [])]
    return found


def test_every_documented_parameter_is_a_field_of_a_model() -> None:
    fields = {
        (field.alias or name, field.description)
        for model in _models(parameters.Parameters)
        for name, field in model.model_fields.items()
    }
    documented = _documented()
    assert documented
    for path, param in documented:
        assert param["description"], (path, param)
        assert (param["name"], param["description"]) in fields, (path, param)


def test_a_path_names_exactly_its_path_parameters() -> None:
    per_path: dict[str, set[str]] = {}
    for path, param in _documented():
        names = per_path.setdefault(path, set())
        if param["in"] == "path":
            assert param["required"], (path, param)
            names.add(param["name"])
    for path, names in per_path.items():
        assert names == set(re.findall(r"{(\w+)}", path)), path


def _refusal(model: type[parameters.Parameters], values: Any) -> tuple[int, str | None]:
    with pytest.raises(Problem) as refused:
        parameters.read(model, values)
    return refused.value.status, refused.value.field


@pytest.mark.parametrize("raw", ["0", "501", "-1", "+5", " 5", "5.0", "ten", "\u00b2", "", "1e2"])
def test_a_limit_outside_1_to_500_in_ascii_digits_is_refused(raw: str) -> None:
    assert _refusal(Page, {"limit": raw}) == (400, "limit")
    assert _refusal(TaskListQuery, {"limit": raw}) == (400, "limit")


def test_limits_and_their_defaults() -> None:
    assert parameters.read(Page, {}).limit == 50
    assert parameters.read(TaskListQuery, {}).limit == 100
    assert parameters.read(Page, {"limit": "010"}).limit == 10
    assert parameters.read(TaskListQuery, {"limit": "500"}).limit == 500


def test_all_namespaces_takes_true_or_false_only() -> None:
    assert parameters.read(AllNamespaces, {}).allNamespaces is False
    assert parameters.read(AllNamespaces, {"allNamespaces": "true"}).allNamespaces is True
    assert parameters.read(AllNamespaces, {"allNamespaces": "false"}).allNamespaces is False
    for raw in ("yes", "1", "True", ""):
        assert _refusal(AllNamespaces, {"allNamespaces": raw}) == (400, "allNamespaces")


def test_task_list_state_and_pass_through_values() -> None:
    query = parameters.read(
        TaskListQuery,
        MultiDict(state="failing", labelSelector="a=b", **{"continue": "tok"}, unknown="x"),
    )
    assert (query.state, query.labelSelector, query.continue_) == ("failing", "a=b", "tok")
    assert parameters.read(TaskListQuery, {"state": ""}).state is None
    assert _refusal(TaskListQuery, {"state": "sleepy"}) == (400, "state")
    assert _refusal(TaskListQuery, {"state": "sleepy", "limit": "0"}) == (400, "limit")


def test_statuses_and_origins_are_comma_separated_or_repeated() -> None:
    query = parameters.read(
        HistoryFilter,
        MultiDict([("status", "failed,succeeded"), ("status", "running,"), ("origin", "api")]),
    )
    assert query.status == ("failed", "succeeded", "running") and query.origin == ("api",)
    assert parameters.read(HistoryFilter, MultiDict(status="")).status == ()
    assert _refusal(HistoryFilter, MultiDict(status="running,done")) == (400, "status")
    assert _refusal(HistoryFilter, MultiDict(origin="cron")) == (400, "origin")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2025-01-09T01:07:00Z", datetime(2025, 1, 9, 1, 7, tzinfo=UTC)),
        ("2025-01-09T03:07:00+02:00", datetime(2025, 1, 9, 1, 7, tzinfo=UTC)),
        ("2025-01-09T01:07:00", None),
        ("yesterday", None),
        ("0001-01-01T00:00:00+14:00", None),
        ("9999-12-31T23:59:59-14:00", None),
    ],
)
def test_times_are_rfc_3339_with_a_zone(raw: str, expected: datetime | None) -> None:
    for key in ("since", "until"):
        if expected is None:
            assert _refusal(HistoryFilter, {key: raw}) == (400, key)
        else:
            assert getattr(parameters.read(HistoryFilter, {key: raw}), key) == expected


def test_a_cursor_is_one_this_api_gave_out() -> None:
    assert parameters.read(Page, {"cursor": parameters.encode_cursor(42)}).cursor == 42
    assert parameters.read(Page, {}).cursor is None
    for raw in ("garbage", "djE6LTE", "\u00ff", ""):
        assert _refusal(Page, {"cursor": raw}) == (400, "cursor")


def test_a_run_id_is_a_positive_63_bit_number() -> None:
    assert parameters.read(RunPath, {"id": "7"}).id == 7
    for raw in ("0", "abc", "99999999999999999999", "\u00b2", "9223372036854775808"):
        assert _refusal(RunPath, {"id": raw}) == (400, "id")


def test_an_instance_id_is_what_a_registration_may_give() -> None:
    assert parameters.read(Instance, {"instance_id": "executor-001"}).instance_id == "executor-001"
    for raw in ("-lead", "trail.", "with space", "x" * 64, "\u00e9t\u00e9"):
        assert _refusal(Instance, {"instance_id": raw}) == (400, "instance_id")


def test_the_idempotency_key_header() -> None:
    read = parameters.read
    assert read(TriggerHeaders, CIMultiDict({"idempotency-key": "deploy-42"})).key == "deploy-42"
    assert read(TriggerHeaders, CIMultiDict({"Idempotency-Key": ""})).key is None
    assert read(TriggerHeaders, CIMultiDict()).key is None
    for raw in ("x" * 129, "deploy 42", "d\u00e9ploy"):
        refused = _refusal(TriggerHeaders, CIMultiDict({"Idempotency-Key": raw}))
        assert refused == (400, "Idempotency-Key")


def test_the_first_of_repeated_single_parameters_counts() -> None:
    assert parameters.read(Page, MultiDict([("limit", "5"), ("limit", "x")])).limit == 5

"""Every ``/api/v1/executors`` route, every kind of caller, with real ServiceAccount tokens
checked by the real API server: no token 401, a bad token 401, a Role with every verb but the
route's 403, a Role with only the route's verb 2xx. And every field of every new body refused by
name (400, never 500)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from tests.api.conftest import ALL_VERBS, EXECUTOR_VERBS, Api, Callers

pytestmark = [pytest.mark.controlplane, pytest.mark.mariadb]

_serial = itertools.count()
NOWHERE = "http://127.0.0.1:1"  # nothing listens: the endpoints stay unhealthy, never dispatched


def register(name: str, instance: str) -> dict[str, Any]:
    return {"name": name, "instance_id": instance, "base_url": NOWHERE, "tasks": []}


def new_executor() -> dict[str, Any]:
    n = next(_serial)
    return register(f"matrix-new-{n}", f"new-{n}")


def joining() -> dict[str, Any]:
    return register("matrix-executor", f"join-{next(_serial)}")


def victim(api: Api) -> str:
    """An instance of the matrix Executor (which keeps others) for a DELETE to remove."""
    instance = f"victim-{next(_serial)}"
    answer = api.call("POST", "/api/v1/executors/register", register("matrix-executor", instance))
    assert answer.status == 200, answer.body
    return instance


# (id, method, path with {ns} {victim}, verb on executors the route needs, body)
Route = tuple[str, str, str, str, Callable[[], Any] | None]
ROUTES: list[Route] = []
for form, prefix in (("short", "/api/v1"), ("namespaced", "/api/v1/namespaces/{ns}")):
    ROUTES += [
        (f"register-new-{form}", "POST", f"{prefix}/executors/register", "create", new_executor),
        (f"register-again-{form}", "POST", f"{prefix}/executors/register", "update", joining),
        (f"heartbeat-{form}", "POST", f"{prefix}/executors/matrix-001/heartbeat", "update", None),
        (
            f"status-{form}",
            "PUT",
            f"{prefix}/executors/matrix-001/status",
            "update",
            lambda: {"status": "online"},
        ),
        (f"deregister-{form}", "DELETE", f"{prefix}/executors/{{victim}}", "update", None),
        (f"list-{form}", "GET", f"{prefix}/executors", "list", None),
        (f"get-{form}", "GET", f"{prefix}/executors/matrix-executor", "get", None),
    ]


@pytest.fixture(scope="module")
def matrix(api: Api) -> dict[str, str]:
    answer = api.call(
        "POST", "/api/v1/executors/register", register("matrix-executor", "matrix-001")
    )
    assert answer.status in (200, 201), answer.body
    return {"ns": api.namespace}


def call(api: Api, route: Route, values: dict[str, str], token: str) -> int:
    _, method, path, _, body = route
    filled = {**values, "victim": victim(api) if "{victim}" in path else ""}
    return api.call(method, path.format(**filled), body() if body else None, token=token).status


@pytest.mark.parametrize("route", ROUTES, ids=[r[0] for r in ROUTES])
def test_route_needs_a_token_and_its_verb(
    api: Api, callers: Callers, matrix: dict[str, str], route: Route
) -> None:
    verb = route[3]
    assert call(api, route, matrix, token="") == 401
    assert call(api, route, matrix, token="not-a-kubernetes-token") == 401
    without = callers.token(
        f"ex-without-{verb}",
        ALL_VERBS,
        executor_verbs=tuple(v for v in EXECUTOR_VERBS if v != verb),
    )
    assert call(api, route, matrix, token=without) == 403
    only = callers.token(f"ex-only-{verb}", (), executor_verbs=(verb,))
    assert 200 <= call(api, route, matrix, token=only) < 300


def test_registration_also_needs_the_verbs_on_the_tasks_it_creates_or_joins(
    api: Api, callers: Callers, matrix: dict[str, str]
) -> None:
    body = register("matrix-executor", "with-task")
    body["tasks"] = [{"task_name": "matrix_task", "cron_expression": "@hourly"}]
    executors_only = callers.token("ex-executors-only", (), executor_verbs=EXECUTOR_VERBS)
    answer = api.call("POST", "/api/v1/executors/register", body, token=executors_only)
    assert answer.status == 403 and "tasks.cadenza.dev/matrix-task" in answer.body["error"]
    creator = callers.token("ex-and-task-create", ("create",), executor_verbs=EXECUTOR_VERBS)
    assert api.call("POST", "/api/v1/executors/register", body, token=creator).status == 200
    # The Task exists now: joining it again needs update on it.
    assert api.call("POST", "/api/v1/executors/register", body, token=creator).status == 403
    updater = callers.token("ex-and-task-update", ("update",), executor_verbs=EXECUTOR_VERBS)
    assert api.call("POST", "/api/v1/executors/register", body, token=updater).status == 200


def test_deregistering_the_last_endpoint_also_needs_delete(api: Api, callers: Callers) -> None:
    assert (
        api.call("POST", "/api/v1/executors/register", register("lonely", "lonely-1")).status == 201
    )
    updater = callers.token("ex-only-update", (), executor_verbs=("update",))
    assert api.call("DELETE", "/api/v1/executors/lonely-1", token=updater).status == 403
    both = callers.token("ex-update-delete", (), executor_verbs=("update", "delete"))
    assert api.call("DELETE", "/api/v1/executors/lonely-1", token=both).status == 204


# -- bad input: every field of every new body --------------------------------------------------

GOOD = {
    "name": "bad-input",
    "instance_id": "bad-input-1",
    "base_url": NOWHERE,
    "health_check_url": f"{NOWHERE}/health",
    "tasks": [{"task_name": "bad_input_task", "cron_expression": "@hourly"}],
    "namespace": None,
    "heartbeat_seconds": 5,
}


def with_(**changes: Any) -> dict[str, Any]:
    body = {k: v for k, v in GOOD.items() if v is not None}
    for key, value in changes.items():
        if value is _DROP:
            body.pop(key)
        else:
            body[key] = value
    return body


_DROP = object()
BAD_REGISTRATIONS: dict[str, tuple[Any, str]] = {
    "name-missing": (with_(name=_DROP), "name"),
    "name-not-a-string": (with_(name=7), "name"),
    "name-not-a-name": (with_(name="Not A Name!"), "name"),
    "instance-missing": (with_(instance_id=_DROP), "instance_id"),
    "instance-not-a-string": (with_(instance_id=["x"]), "instance_id"),
    "instance-bad-characters": (with_(instance_id="has space"), "instance_id"),
    "instance-too-long": (with_(instance_id="x" * 64), "instance_id"),
    "base-url-missing": (with_(base_url=_DROP), "base_url"),
    "base-url-not-a-string": (with_(base_url=9090), "base_url"),
    "base-url-not-http": (with_(base_url="ftp://host:21"), "base_url"),
    "base-url-no-host": (with_(base_url="http://"), "base_url"),
    "base-url-query": (with_(base_url="http://h:1/?q=1"), "base_url"),
    "health-url-not-a-string": (with_(health_check_url=True), "health_check_url"),
    "health-url-not-http": (with_(health_check_url="localhost:9090/health"), "health_check_url"),
    "tasks-not-a-list": (with_(tasks="test_task"), "tasks"),
    "task-not-an-object": (with_(tasks=["test_task"]), "tasks.0"),
    "task-name-missing": (with_(tasks=[{"cron_expression": "@hourly"}]), "tasks.0.task_name"),
    "task-name-bad": (with_(tasks=[{"task_name": "Bad Task!"}]), "tasks.0.task_name"),
    "task-unknown-field": (
        with_(tasks=[{"task_name": "t", "cron_expression": "@hourly", "x": 1}]),
        "tasks.0.x",
    ),
    "task-cron-not-a-string": (
        with_(tasks=[{"task_name": "t", "cron_expression": 5}]),
        "tasks.0.cron_expression",
    ),
    "task-cron-bad": (
        with_(tasks=[{"task_name": "new_t", "cron_expression": "every tuesday"}]),
        "tasks.0.cron_expression",
    ),
    "task-cron-missing-for-a-new-task": (
        with_(tasks=[{"task_name": "brand_new_task"}]),
        "tasks.0.cron_expression",
    ),
    "namespace-not-a-string": (with_(namespace=1), "namespace"),
    "namespace-bad": (with_(namespace="Not_A_Namespace"), "namespace"),
    "heartbeat-zero": (with_(heartbeat_seconds=0), "heartbeat_seconds"),
    "heartbeat-too-long": (with_(heartbeat_seconds=3601), "heartbeat_seconds"),
    "heartbeat-a-string": (with_(heartbeat_seconds="10"), "heartbeat_seconds"),
    "unknown-field": (with_(executor_port=9090), "executor_port"),
    "not-an-object": ([GOOD], "body"),
}


@pytest.mark.parametrize("case", sorted(BAD_REGISTRATIONS))
def test_bad_registration_is_a_400_naming_the_field(api: Api, case: str) -> None:
    body, field = BAD_REGISTRATIONS[case]
    answer = api.call("POST", "/api/v1/executors/register", body)
    assert answer.status == 400, answer.body
    assert answer.body["field"] == field, answer.body


BAD_STATUS: dict[str, tuple[Any, str]] = {
    "missing": ({}, "status"),
    "unknown-state": ({"status": "paused"}, "status"),
    "not-a-string": ({"status": 1}, "status"),
    "capitalised": ({"status": "Online "}, "status"),
    "unknown-field": ({"status": "online", "reason": "x"}, "reason"),
    "not-an-object": ("online", "body"),
}


@pytest.mark.parametrize("case", sorted(BAD_STATUS))
def test_bad_status_is_a_400_naming_the_field(api: Api, matrix: dict[str, str], case: str) -> None:
    body, field = BAD_STATUS[case]
    answer = api.call("PUT", "/api/v1/executors/matrix-001/status", body)
    assert answer.status == 400, answer.body
    assert answer.body["field"] == field, answer.body


@pytest.mark.parametrize(
    ("body", "raw", "field"),
    [({"status": "online"}, None, "status"), ([], None, "body"), (None, b"{", "body")],
    ids=["unknown-field", "not-an-object", "not-json"],
)
def test_bad_heartbeat_is_a_400_naming_the_field(
    api: Api, matrix: dict[str, str], body: Any, raw: bytes | None, field: str
) -> None:
    answer = api.call("POST", "/api/v1/executors/matrix-001/heartbeat", body, raw=raw)
    assert answer.status == 400, answer.body
    assert answer.body["field"] == field, answer.body


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/executors/has%20space/heartbeat",
        "/api/v1/executors/has%20space/status",
        "/api/v1/executors/has%20space",
    ],
    ids=["heartbeat", "status", "deregister"],
)
def test_a_bad_instance_id_in_the_path_is_a_400(api: Api, path: str) -> None:
    method = {"heartbeat": "POST", "status": "PUT"}.get(path.rsplit("/", 1)[-1], "DELETE")
    answer = api.call(method, path, {"status": "online"} if method == "PUT" else None)
    assert answer.status == 400 and answer.body["field"] == "instance_id", answer.body

"""The Task routes against a real API server: the brief's body verbatim, every route and
filter, both URL forms, and every kind of bad input answered with the right status and field."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from tests.api.conftest import Api, Callers
from tests.support import wait_for
from tests.support.scenario import task

pytestmark = [pytest.mark.controlplane, pytest.mark.mariadb]

BRIEF = {
    "name": "test_task",
    "cron_expression": "*/10 * * * * *",
    "execution_mode": "parallel",
    "load_balance_strategy": "round_robin",
}


def stored(api: Api, name: str) -> dict[str, Any]:
    out = api.kubectl("get", "tasks.cadenza.dev", name, "-n", api.namespace, "-o", "json")
    return dict(json.loads(out))


def test_the_brief_body_verbatim_creates_test_task(api: Api) -> None:
    created = api.call("POST", "/api/v1/tasks", BRIEF)
    assert created.status == 201, created.body
    assert created.body["name"] == "test-task"
    assert created.body["originalName"] == "test_task"
    task = stored(api, "test-task")
    assert task["metadata"]["annotations"]["cadenza.dev/original-name"] == "test_task"
    assert task["spec"]["schedule"] == "*/10 * * * * *"
    assert task["spec"]["executionMode"] == "Parallel"
    assert task["spec"]["loadBalanceStrategy"] == "RoundRobin"

    # Addressed by either name, in either URL form.
    for path in ("/api/v1/tasks/test_task", f"/api/v1/namespaces/{api.namespace}/tasks/test-task"):
        got = api.call("GET", path)
        assert got.status == 200, got.body
        assert got.body["uid"] == task["metadata"]["uid"]
        times = [datetime.fromisoformat(t) for t in got.body["nextFireTimes"]]
        assert len(times) == 5
        assert all(t.second % 10 == 0 for t in times)
        assert times == sorted(times)

    # No executors in the body: it serves from the default Executor, and waits until one exists.
    assert [e["name"] for e in task["spec"]["executors"]] == ["default"]

    def waiting() -> bool:
        conditions = api.call("GET", "/api/v1/tasks/test_task").body["status"].get("conditions")
        return any(
            c["type"] == "ExecutorAvailable" and c["status"] == "False" for c in conditions or []
        )

    wait_for(waiting, 30, "test-task to report ExecutorAvailable=False")

    again = api.call("POST", "/api/v1/tasks", BRIEF)
    assert again.status == 409, again.body
    clash = api.call("POST", "/api/v1/tasks", {**BRIEF, "name": "Test_Task"})
    assert clash.status == 409, "two original names that map to one Task name conflict"


def test_put_patch_and_delete(api: Api) -> None:
    body = {"name": "edit_me", "schedule": "@hourly", "labels": {"tier": "a"}}
    assert api.call("POST", "/api/v1/tasks", body).status == 201

    replaced = api.call(
        "PUT",
        "/api/v1/tasks/edit_me",
        {
            "name": "edit_me",
            "cron_expression": "*/5 * * * * *",
            "execution_mode": "skip",
            "load_balance_strategy": "least_loaded",
            "retries": 2,
            "description": "replaced",
        },
    )
    assert replaced.status == 200, replaced.body
    spec = stored(api, "edit-me")["spec"]
    assert spec["schedule"] == "*/5 * * * * *"
    assert spec["executionMode"] == "Skip"
    assert spec["loadBalanceStrategy"] == "LeastLoaded"
    assert spec["retry"]["maxAttempts"] == 3
    assert replaced.body["description"] == "replaced"

    patched = api.call(
        "PATCH",
        f"/api/v1/namespaces/{api.namespace}/tasks/edit-me",
        {"enabled": False, "payload": {"x": 1}, "labels": {"extra": "b"}},
    )
    assert patched.status == 200, patched.body
    task = stored(api, "edit-me")
    assert task["spec"]["suspend"] is True
    assert task["spec"]["payload"] == {"x": 1}
    assert task["spec"]["schedule"] == "*/5 * * * * *", "a patch keeps the fields it omits"
    assert task["metadata"]["labels"] == {"tier": "a", "extra": "b"}
    assert patched.body["nextFireTimes"] == [], "a suspended Task has no next fire time"

    assert api.call("DELETE", "/api/v1/tasks/edit_me").status == 204
    gone = api.plane.kubectl(
        "get", "tasks.cadenza.dev", "edit-me", "-n", api.namespace, check=False
    )
    assert gone.returncode != 0
    assert api.call("DELETE", "/api/v1/tasks/edit_me").status == 404
    assert api.call("GET", "/api/v1/tasks/edit_me").status == 404
    assert api.call("PATCH", "/api/v1/tasks/edit_me", {"enabled": True}).status == 404


def test_list_filters_and_pages(api: Api) -> None:
    for i in range(5):
        body = {
            "name": f"listed_{i}",
            "schedule": "@daily",
            "labels": {"group": "listed"},
            "suspend": i % 2 == 0,
        }
        assert api.call("POST", "/api/v1/tasks", body).status == 201

    names: list[str] = []
    token = ""
    while True:
        query = "?labelSelector=group%3Dlisted&limit=2" + (f"&continue={token}" if token else "")
        page = api.call("GET", f"/api/v1/tasks{query}")
        assert page.status == 200, page.body
        assert len(page.body["items"]) <= 2
        names += [t["name"] for t in page.body["items"]]
        token = page.body.get("continue") or ""
        if not token:
            break
    assert sorted(names) == [f"listed-{i}" for i in range(5)]

    suspended = api.call("GET", "/api/v1/tasks?labelSelector=group%3Dlisted&state=suspended")
    assert sorted(t["name"] for t in suspended.body["items"]) == [
        "listed-0",
        "listed-2",
        "listed-4",
    ]
    active = api.call(
        "GET", f"/api/v1/namespaces/{api.namespace}/tasks?labelSelector=group%3Dlisted&state=active"
    )
    assert sorted(t["name"] for t in active.body["items"]) == ["listed-1", "listed-3"]
    failing = api.call("GET", "/api/v1/tasks?labelSelector=group%3Dlisted&state=failing")
    assert failing.status == 200 and failing.body["items"] == []


def test_state_invalid_lists_the_tasks_the_engine_refused(api: Api) -> None:
    """A Task the schema lets through but the engine cannot schedule (31 February never comes;
    no admission webhook in this module) gets ``Ready=False``: ``state=invalid`` lists it, and
    only it."""
    for name, schedule in (("never", "0 0 31 2 *"), ("sometimes", "@daily")):
        manifest = task(name, schedule, executors=["default"])
        manifest["metadata"]["labels"] = {"group": "validity"}
        api.kubectl("apply", "-n", api.namespace, "-f", "-", input=json.dumps(manifest))

    def invalid() -> list[str]:
        answer = api.call("GET", "/api/v1/tasks?labelSelector=group%3Dvalidity&state=invalid")
        assert answer.status == 200, answer.body
        return [t["name"] for t in answer.body["items"]]

    assert wait_for(invalid, 60, "the impossible schedule to list invalid") == ["never"]
    ready = next(c for c in stored(api, "never")["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSchedule")
    # Once the leader has judged both, the valid one is Ready and stays out.
    wait_for(
        lambda: any(c["type"] == "Ready" and c["status"] == "True"
                    for c in stored(api, "sometimes").get("status", {}).get("conditions") or []),
        60, "the valid Task to be Ready",
    )  # fmt: skip
    assert invalid() == ["never"]


def test_all_namespaces_lists_every_namespace_for_a_cluster_wide_role(
    api: Api, callers: Callers
) -> None:
    other = f"{api.namespace}-other"
    api.kubectl("create", "namespace", other)
    try:
        for ns in (api.namespace, other):
            body = {"name": "everywhere", "schedule": "@daily", "namespace": ns,
                    "labels": {"group": "everywhere"}}  # fmt: skip
            assert api.call("POST", "/api/v1/tasks", body).status == 201
        listed = api.call(
            "GET", "/api/v1/tasks?allNamespaces=true&labelSelector=group%3Deverywhere"
        )
        assert listed.status == 200, listed.body
        found = sorted((t["namespace"], t["name"]) for t in listed.body["items"])
        assert found == sorted([(api.namespace, "everywhere"), (other, "everywhere")])
        # A Role in one namespace may list there, not everywhere.
        local = callers.token("lister", ("get", "list"))
        assert api.call("GET", "/api/v1/tasks", token=local).status == 200
        refused = api.call("GET", "/api/v1/tasks?allNamespaces=true", token=local)
        assert refused.status == 403, refused.body
    finally:
        api.kubectl("delete", "namespace", other, "--wait=false")


def test_a_change_the_api_server_refuses_is_422_with_its_message(api: Api) -> None:
    refused = api.call(
        "POST", "/api/v1/tasks", {**BRIEF, "name": "labelled", "labels": {"bad key!": "x"}}
    )
    assert refused.status == 422, refused.body
    assert "bad key!" in refused.body["error"]


def test_a_body_too_large_is_413(api: Api) -> None:
    huge = {**BRIEF, "name": "huge", "payload": "x" * 1_100_000}
    answer = api.call("POST", "/api/v1/tasks", huge)
    assert answer.status == 413, answer.body
    assert "error" in answer.body


@pytest.mark.parametrize(
    ("method", "path", "raw", "field"),
    [
        ("POST", "/api/v1/tasks", b"{not json", "body"),
        ("POST", "/api/v1/tasks", b"[1, 2]", "body"),
        ("POST", "/api/v1/tasks", b'"text"', "body"),
        ("POST", "/api/v1/tasks", b"\xff\xfe", "body"),
        ("POST", "/api/v1/tasks", b'{"name": "n", "schedule": "@daily", "payload": NaN}', "body"),
        (
            "POST",
            "/api/v1/tasks",
            b'{"name": "n", "timeout_seconds": 1' + b"0" * 5000 + b"}",
            "body",
        ),
        ("PUT", "/api/v1/tasks/x", b"{", "body"),
        ("PATCH", "/api/v1/tasks/x", b"null", "body"),
    ],
)
def test_malformed_json_is_400(api: Api, method: str, path: str, raw: bytes, field: str) -> None:
    answer = api.call(method, path, raw=raw)
    assert answer.status == 400, answer.body
    assert answer.body["field"] == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**BRIEF, "cron_expression": "*/10 * *"}, "cron_expression"),
        ({**BRIEF, "cron_expression": 10}, "cron_expression"),
        ({**BRIEF, "time_zone": "Mars/Olympus"}, "time_zone"),
        ({**BRIEF, "execution_mode": "both"}, "execution_mode"),
        ({**BRIEF, "load_balance_strategy": "fastest"}, "load_balance_strategy"),
        ({**BRIEF, "retries": -1}, "retries"),
        ({**BRIEF, "timeout_seconds": "60"}, "timeout_seconds"),
        ({**BRIEF, "enabled": "yes"}, "enabled"),
        ({**BRIEF, "executors": "pool"}, "executors"),
        ({**BRIEF, "name": "bad name"}, "name"),
        ({**BRIEF, "namespace": "Not_A_Namespace"}, "namespace"),
        ({**BRIEF, "surprise": True}, "surprise"),
        ({"cron_expression": "@hourly"}, "name"),
    ],
)
def test_bad_fields_are_400_naming_the_field(api: Api, body: dict[str, Any], field: str) -> None:
    answer = api.call("POST", "/api/v1/tasks", body)
    assert answer.status == 400, answer.body
    assert answer.body["field"] == field
    assert answer.body["error"]


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("GET", "/api/v1/tasks?limit=0", None, "limit"),
        ("GET", "/api/v1/tasks?limit=abc", None, "limit"),
        ("GET", "/api/v1/tasks?limit=%C2%B2", None, "limit"),
        ("GET", "/api/v1/tasks?state=sleepy", None, "state"),
        ("GET", "/api/v1/tasks?labelSelector=%3D%3D%3D", None, "labelSelector"),
        ("GET", "/api/v1/tasks?continue=garbage", None, "continue"),
        ("GET", "/api/v1/tasks/Bad%20Name", None, "name"),
        ("GET", "/api/v1/namespaces/NOPE/tasks", None, "namespace"),
        ("PUT", "/api/v1/tasks/one", {**BRIEF, "name": "other"}, "name"),
        ("PATCH", "/api/v1/namespaces/{ns}/tasks/test_task", {"namespace": "other"}, "namespace"),
        ("POST", "/api/v1/tasks/test_task/trigger", None, "Idempotency-Key"),
    ],
)
def test_bad_parameters_are_400(
    api: Api, method: str, path: str, body: dict[str, Any] | None, field: str
) -> None:
    headers = {"Idempotency-Key": "x" * 129} if path.endswith("/trigger") else None
    answer = api.call(method, path.format(ns=api.namespace), body, headers=headers)
    assert answer.status == 400, answer.body
    assert answer.body["field"] == field


def test_unknown_routes_and_methods_answer_json(api: Api) -> None:
    missing = api.call("GET", "/api/v1/tasks/a/b/c")
    assert missing.status == 404 and "error" in missing.body
    wrong = api.call("POST", "/api/v1/tasks/x")
    assert wrong.status == 405 and "error" in wrong.body


def test_openapi_document_describes_the_routes(api: Api) -> None:
    doc = api.call("GET", "/api/v1/openapi.json", token="")
    assert doc.status == 200
    assert doc.body["openapi"].startswith("3.1")
    schemas = doc.body["components"]["schemas"]
    assert {"TaskBody", "TaskOut", "ExecutionList", "ErrorOut"} <= set(schemas)
    assert set(BRIEF) <= set(schemas["TaskBody"]["properties"])
    assert "continue" in schemas["TaskList"]["properties"]
    # Every documented operation is served (a missing route would be aiohttp's bare 404/405).
    for path, item in doc.body["paths"].items():
        filled = path.format(
            namespace=api.namespace, name="openapi-probe", id="1", instance_id="openapi-probe"
        )
        for method in ("get", "post", "put", "patch", "delete"):
            if method in item:
                answer = api.call(method.upper(), filled, {} if method != "get" else None)
                assert answer.status != 405, f"{method} {path}"
                assert answer.body is None or answer.body.get("error") != "Not Found", path


@pytest.mark.parametrize("depth", [25, 5_000, 100_000])
def test_deeply_nested_payloads_are_400_never_500(api: Api, depth: int) -> None:
    payload = b"[" * depth + b"]" * depth
    raw = b'{"name": "deep", "cron_expression": "@hourly", "payload": ' + payload + b"}"
    answer = api.call("POST", "/api/v1/tasks", raw=raw)
    assert answer.status == 400, answer.body
    assert answer.body["field"] in ("payload", "body")

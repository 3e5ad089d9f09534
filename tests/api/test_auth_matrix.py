"""Every route, every kind of caller, with real ServiceAccount tokens (TokenRequest) checked by
the real API server's TokenReview and RBAC: no token 401, a bad token 401, a Role with every
verb but the route's 403, a Role with only the route's verb 2xx."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.api.conftest import ALL_VERBS, Api, Callers

pytestmark = [pytest.mark.controlplane, pytest.mark.mariadb]

_serial = itertools.count()


def create_body() -> dict[str, Any]:
    return {"name": f"made_{next(_serial)}", "cron_expression": "@hourly"}


def victim(api: Api) -> str:
    """A Task made by the admin for a DELETE to remove."""
    name = f"victim-{next(_serial)}"
    assert api.call("POST", "/api/v1/tasks", {"name": name, "schedule": "@hourly"}).status == 201
    return name


def pending(api: Api) -> str:
    """An open run for a cancel to end: no pod serves ``matrix-retrying``, so its first attempt
    fails and the run waits an hour for its retry."""
    fired = api.call("POST", "/api/v1/tasks/matrix_retrying/trigger")
    assert fired.status == 200, fired.body
    return str(fired.body["executionId"])


# (id, method, path with {ns} {task} {run} {victim} {pending}, verb the route needs,
# cluster-wide, body)
Route = tuple[str, str, str, str, bool, Callable[[], Any] | None]
ROUTES: list[Route] = []
for form, prefix in (("short", "/api/v1"), ("namespaced", "/api/v1/namespaces/{ns}")):
    ROUTES += [
        (f"list-{form}", "GET", f"{prefix}/tasks", "list", False, None),
        (f"create-{form}", "POST", f"{prefix}/tasks", "create", False, create_body),
        (f"get-{form}", "GET", f"{prefix}/tasks/{{task}}", "get", False, None),
        (
            f"put-{form}",
            "PUT",
            f"{prefix}/tasks/{{task}}",
            "update",
            False,
            lambda: {"name": "matrix", "schedule": "@hourly", "enabled": False},
        ),
        (
            f"patch-{form}",
            "PATCH",
            f"{prefix}/tasks/{{task}}",
            "patch",
            False,
            lambda: {"description": "patched"},
        ),
        (f"delete-{form}", "DELETE", f"{prefix}/tasks/{{victim}}", "delete", False, None),
        (f"trigger-{form}", "POST", f"{prefix}/tasks/{{task}}/trigger", "trigger", False, None),
        (f"history-{form}", "GET", f"{prefix}/tasks/{{task}}/executions", "get", False, None),
    ]
ROUTES += [
    ("history-namespace", "GET", "/api/v1/namespaces/{ns}/executions", "list", False, None),
    ("history-namespace-query", "GET", "/api/v1/executions?namespace={ns}", "list", False, None),
    ("history-cluster", "GET", "/api/v1/executions", "list", True, None),
    ("run", "GET", "/api/v1/executions/{run}", "get", False, None),
    ("cancel", "POST", "/api/v1/executions/{pending}/cancel", "cancel", False, None),
]


@pytest.fixture(scope="module")
def matrix(api: Api) -> dict[str, str]:
    """The Task every route touches, and one of its runs."""
    body = {"name": "matrix", "schedule": "@hourly", "enabled": False}
    assert api.call("POST", "/api/v1/tasks", body).status == 201
    fired = api.call("POST", "/api/v1/tasks/matrix/trigger")
    assert fired.status == 200, fired.body
    retrying = {
        "name": "matrix_retrying",
        "schedule": "@hourly",
        "enabled": False,
        "execution_mode": "parallel",
        "retry": {"maxAttempts": 5, "backoffSeconds": 3600, "maxBackoffSeconds": 3600},
    }
    assert api.call("POST", "/api/v1/tasks", retrying).status == 201
    return {"ns": api.namespace, "task": "matrix", "run": str(fired.body["executionId"])}


def call(api: Api, route: Route, values: dict[str, str], token: str) -> int:
    _, method, path, _, _, body = route
    filled = {
        **values,
        "victim": victim(api) if "{victim}" in path else "",
        "pending": pending(api) if "{pending}" in path else "",
    }
    return api.call(method, path.format(**filled), body() if body else None, token=token).status


@pytest.mark.parametrize("route", ROUTES, ids=[r[0] for r in ROUTES])
def test_auth_matrix(api: Api, callers: Callers, matrix: dict[str, str], route: Route) -> None:
    _, _, _, verb, cluster_wide, _ = route
    assert call(api, route, matrix, token="") == 401
    for forged in ("not-a-token", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"):
        assert call(api, route, matrix, token=forged) == 401

    others = tuple(v for v in ALL_VERBS if v != verb)
    without = callers.token(f"without-{verb}", others)
    assert call(api, route, matrix, without) == 403

    only = callers.token(f"only-{verb}", (verb,))
    if cluster_wide:  # the namespace's Role is not enough for every namespace's history
        assert call(api, route, matrix, only) == 403
        only = callers.token(f"cluster-{verb}", (verb,), cluster_wide=True)
    status = call(api, route, matrix, only)
    assert 200 <= status < 300, f"{route[0]} with only {verb!r}: {status}"


def test_unprotected_routes_stay_open(api: Api) -> None:
    for path in ("/healthz", "/readyz", "/api/v1/openapi.json"):
        assert api.call("GET", path, token="").status == 200, path


STATUS_PATHS = ("/metrics", "/api/v1/replicas")


def status_reader(api: Api, callers: Callers) -> str:
    """A ServiceAccount allowed ``get`` on the status paths as non-resource URLs, as a
    Prometheus would be (a ClusterRole: non-resource URLs have no namespace)."""
    name = f"{api.namespace}-status-reader"
    objects = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "status-reader"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": name},
         "rules": [{"nonResourceURLs": list(STATUS_PATHS), "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": "status-reader",
                       "namespace": api.namespace}]},
    ]  # fmt: skip
    doc = {"apiVersion": "v1", "kind": "List", "items": objects}
    api.kubectl("apply", "-n", api.namespace, "-f", "-", input=json.dumps(doc))
    token = api.kubectl("create", "token", "status-reader", "-n", api.namespace).strip()
    callers.made["status-reader"] = token  # its ClusterRole goes with the module's callers
    return token


def test_metrics_and_replicas_want_a_token_allowed_to_read_them(api: Api, callers: Callers) -> None:
    reader = status_reader(api, callers)
    for path in STATUS_PATHS:
        assert api.call("GET", path, token="").status == 401, path
        assert api.call("GET", path, token="not-a-token").status == 401, path
        assert api.call("GET", path, token=reader).status == 200, path
    # Every verb on Cadenza's resources, but not /metrics.
    refused = api.call("GET", "/metrics")
    assert refused.status == 403
    assert "/metrics" in refused.body["error"]
    # /api/v1/replicas is what Kubernetes' own system:discovery role grants every
    # authenticated user (``get`` on ``/api/*``): any valid token reads it.
    assert api.call("GET", "/api/v1/replicas").status == 200
    metrics = api.call("GET", "/metrics", token=reader)
    assert "cadenza_" in str(metrics.body)


@pytest.mark.parametrize(
    ("method", "path", "raw"),
    [
        ("POST", "/api/v1/tasks", b"{not json"),
        ("PUT", "/api/v1/tasks/Bad%20Name", b"{}"),
        ("GET", "/api/v1/tasks?limit=0", None),
        ("GET", "/api/v1/executions?cursor=garbage", None),
        ("GET", "/api/v1/executions/abc", None),
        ("GET", "/api/v1/tasks/Bad%20Name", None),
        ("DELETE", "/api/v1/tasks/Bad%20Name", None),
        ("POST", "/api/v1/tasks/x/trigger", None),
    ],
)
def test_no_token_is_401_before_any_other_answer(
    api: Api, method: str, path: str, raw: bytes | None
) -> None:
    answer = api.call(method, path, raw=raw, token="")
    assert answer.status == 401, answer.body
    assert answer.body["field"] == "Authorization"

"""The run history: per Task and across Tasks, every filter, one run with its attempts, and
cursor paging that neither repeats nor skips a run while new runs arrive.

Rows are written straight into ``task_executions`` (finished runs of Tasks the leader does not
know, which it never touches; no tick, so they never collide), so every filter has exactly known
answers.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.api.conftest import Api, Callers
from tests.support import db

pytestmark = [pytest.mark.controlplane, pytest.mark.mariadb]

T0 = datetime(2025, 1, 9, 1, 0, 0)
INSERT = (
    "INSERT INTO task_executions (task_uid, namespace, task_name, scheduled_at, origin,"
    " requested_at, status, attempt, max_attempts, epoch, result, error, created_at, updated_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, 1, 2, 1, %s, %s, NOW(3), NOW(3))"
)


def insert(
    api: Api,
    task: str,
    status: str,
    origin: str,
    at: datetime,
    namespace: str | None = None,
    result: str | None = None,
) -> int:
    with db.connect(api.database_url) as conn, conn.cursor() as cur:
        cur.execute(
            INSERT,
            (
                f"00000000-0000-0000-0000-{abs(hash(task)) % 10**12:012d}",
                namespace or api.namespace,
                task,
                None,
                origin,
                at,
                status,
                result,
                "boom" if status == "failed" else None,
            ),
        )
        return int(cur.lastrowid)


def pages(api: Api, path: str, limit: int) -> list[list[int]]:
    """Every page of ``path`` as lists of ids, following the cursor."""
    found: list[list[int]] = []
    cursor = ""
    while True:
        sep = "&" if "?" in path else "?"
        answer = api.call(
            "GET", f"{path}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        )
        assert answer.status == 200, answer.body
        found.append([run["id"] for run in answer.body["items"]])
        cursor = answer.body.get("cursor") or ""
        if not cursor:
            return found


@pytest.fixture(scope="module")
def runs(api: Api) -> dict[str, list[int]]:
    """Ten runs of ``hist-a`` and four of ``hist-b``, of known statuses, origins and times."""
    made: dict[str, list[int]] = {"hist-a": [], "hist-b": []}
    for i in range(10):
        status = "failed" if i % 3 == 0 else "succeeded"
        origin = "manual" if i == 5 else "schedule"
        made["hist-a"].append(
            insert(api, "hist-a", status, origin, T0 + timedelta(minutes=i), result=f'{{"n": {i}}}')
        )
    for i in range(4):
        made["hist-b"].append(
            insert(api, "hist-b", "skipped", "schedule", T0 + timedelta(minutes=i))
        )
    made["elsewhere"] = [insert(api, "hist-a", "succeeded", "schedule", T0, namespace="other-ns")]
    return made


def test_per_task_history_is_newest_first_in_pages(api: Api, runs: dict[str, list[int]]) -> None:
    found = pages(api, "/api/v1/tasks/hist_a/executions", 3)
    assert [len(p) for p in found] == [3, 3, 3, 1]
    assert [i for p in found for i in p] == sorted(runs["hist-a"], reverse=True)
    namespaced = pages(api, f"/api/v1/namespaces/{api.namespace}/tasks/hist-b/executions", 50)
    assert namespaced == [sorted(runs["hist-b"], reverse=True)]


def test_filters(api: Api, runs: dict[str, list[int]]) -> None:
    a = runs["hist-a"]

    def ids(query: str) -> list[int]:
        return [i for p in pages(api, f"/api/v1/tasks/hist-a/executions?{query}", 4) for i in p]

    assert ids("status=failed") == [a[9], a[6], a[3], a[0]]
    assert ids("status=failed,succeeded") == ids("status=failed&status=succeeded")
    assert len(ids("status=failed,succeeded")) == 10
    assert ids("origin=manual") == [a[5]]
    assert ids("since=2025-01-09T01:07:00Z") == [a[9], a[8], a[7]]
    assert ids("until=2025-01-09T01:02:00%2B00:00") == [a[1], a[0]]
    assert ids("since=2025-01-09T01:02:00Z&until=2025-01-09T01:04:00Z&status=succeeded") == [a[2]]

    across = pages(api, f"/api/v1/executions?namespace={api.namespace}", 100)[0]
    assert sorted(across) == sorted(a + runs["hist-b"])
    task_only = pages(api, f"/api/v1/namespaces/{api.namespace}/executions?task=hist-b", 100)[0]
    assert sorted(task_only) == sorted(runs["hist-b"])
    everywhere = pages(api, "/api/v1/executions?status=succeeded", 100)[0]
    assert runs["elsewhere"][0] in everywhere


def test_one_run_with_attempts_and_result(api: Api, runs: dict[str, list[int]]) -> None:
    run = runs["hist-a"][0]
    with db.connect(api.database_url) as conn, conn.cursor() as cur:
        for attempt, status in ((1, "failed"), (2, "failed")):
            cur.execute(
                "INSERT INTO execution_attempts (execution_id, attempt, pod_name, status,"
                " dispatched_at, finished_at, error) VALUES (%s, %s, %s, %s, NOW(3), NOW(3), 'x')",
                (run, attempt, f"pod-{attempt}", status),
            )
    answer = api.call("GET", f"/api/v1/executions/{run}")
    assert answer.status == 200, answer.body
    body: dict[str, Any] = answer.body
    assert body["task"] == "hist-a" and body["status"] == "failed" and body["error"] == "boom"
    assert body["result"] == {"n": 0}
    assert [(a["attempt"], a["pod"]) for a in body["attempts"]] == [(1, "pod-1"), (2, "pod-2")]
    assert "callback_token_hash" not in str(body)
    assert api.call("GET", "/api/v1/executions/999999999").status == 404


def test_paging_while_runs_arrive_never_repeats_or_skips(api: Api) -> None:
    existing = [insert(api, "busy", "succeeded", "schedule", T0) for _ in range(25)]
    stop = threading.Event()
    arrived: list[int] = []

    def writer() -> None:
        while not stop.is_set():
            arrived.append(insert(api, "busy", "succeeded", "schedule", T0))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(arrived) < 3:  # runs are arriving before the first page is read
            stop.wait(0.01)
        found = pages(api, "/api/v1/tasks/busy/executions", 4)
    finally:
        stop.set()
        thread.join()
    served = [i for p in found for i in p]
    assert len(served) == len(set(served)), "a run was served twice"
    assert served == sorted(served, reverse=True)
    first = served[0]
    expected = sorted((i for i in existing + arrived if i <= first), reverse=True)
    assert served == expected, "a run that existed when paging started was skipped"
    assert any(i > first for i in arrived), "no run arrived while paging"


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/executions?cursor=garbage", "cursor"),
        ("/api/v1/executions?cursor=djE6LTE", "cursor"),  # "v1:-1"
        ("/api/v1/executions?cursor=%FF", "cursor"),
        ("/api/v1/executions?status=sleeping", "status"),
        ("/api/v1/executions?origin=cosmic", "origin"),
        ("/api/v1/executions?since=yesterday", "since"),
        ("/api/v1/executions?until=2025-01-01T00:00:00", "until"),
        ("/api/v1/executions?since=0001-01-01T00:00:00%2B14:00", "since"),
        ("/api/v1/executions?until=9999-12-31T23:59:59-14:00", "until"),
        ("/api/v1/executions?limit=501", "limit"),
        ("/api/v1/executions?namespace=Bad_NS", "namespace"),
        ("/api/v1/executions/abc", "id"),
        ("/api/v1/executions/0", "id"),
        ("/api/v1/executions/99999999999999999999999", "id"),
        ("/api/v1/executions/%C2%B2", "id"),
        ("/api/v1/tasks/bad%20name/executions", "name"),
    ],
)
def test_bad_history_parameters_are_400(api: Api, path: str, field: str) -> None:
    answer = api.call("GET", path)
    assert answer.status == 400, answer.body
    assert answer.body["field"] == field


def test_a_run_tells_nothing_to_a_caller_who_may_not_see_it(api: Api, callers: Callers) -> None:
    """A run is addressed by its id alone: refused callers learn neither its Task nor whether
    it exists. A missing run is 404 only to a caller allowed the verb on every Task."""
    run = insert(api, "hist-secret", "succeeded", "manual", T0)
    missing = 999_999_998
    outsider = callers.token("hist-outsider", ())  # no rights on any Task
    local = callers.token("hist-local", ("get", "list", "cancel"))  # this namespace's Tasks

    def refused(token: str, n: int) -> None:
        for method, path, verb in (("GET", "", "get"), ("POST", "/cancel", "cancel")):
            answer = api.call(method, f"/api/v1/executions/{n}{path}", token=token)
            assert answer.status == 403, (method, n, answer.body)
            assert answer.body["error"].endswith(f'may not "{verb}" execution {n}'), answer.body
            assert "hist-secret" not in str(answer.body), answer.body  # nor its Task

    refused(outsider, run)
    refused(outsider, missing)
    refused(local, missing)
    assert api.call("GET", f"/api/v1/executions/{run}", token=local).status == 200
    assert api.call("GET", f"/api/v1/executions/{missing}").status == 404  # the admin's
    assert api.call("POST", f"/api/v1/executions/{missing}/cancel").status == 404

"""A Task's life on a running installation, seen as a user sees it: kubectl and the REST API.

Every wait has a deadline (``--e2e-timeout``) and polls the Task's status; "nothing more fired"
is asserted only after the module's clock Task has fired a few more runs.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests.e2e.cluster import (
    E2E_LABEL,
    EVERY_SECOND,
    TRIGGER_ANNOTATION,
    Api,
    Clock,
    Cluster,
    Tasks,
    condition,
    counted,
    finished,
)
from tests.support import wait_for

YEARLY = "0 0 1 1 *"


def executor_pods(cluster: Cluster) -> set[str]:
    executor = cluster.get("executors.cadenza.dev", cluster.executor) or {}
    return {pod["name"] for pod in (executor.get("status") or {}).get("pods", [])}


def planned(status: dict[str, Any]) -> bool:
    """The leader has taken the Task in: its next tick is in the status."""
    return bool(status.get("nextScheduleTime"))


def test_a_task_every_second_runs_successfully_on_the_executor(
    cluster: Cluster, tasks: Tasks
) -> None:
    name = tasks.create(EVERY_SECOND)
    status = cluster.wait_for_status(
        name,
        "3 successful runs, the last run placed on a pod",
        lambda s: counted(s) >= 3 and "pod" in s.get("lastExecution", {}),
    )
    assert counted(status, "failed") == 0, status
    assert status["consecutiveFailures"] == 0
    assert status["lastSuccessfulTime"] and status["nextScheduleTime"]
    assert condition(status, "Ready")["status"] == "True", status["conditions"]
    assert condition(status, "Scheduled")["status"] == "True", status["conditions"]
    assert status["lastExecution"]["pod"] in executor_pods(cluster), status["lastExecution"]


def test_the_trigger_annotation_fires_one_counted_run(cluster: Cluster, tasks: Tasks) -> None:
    name = tasks.create(YEARLY)
    before = cluster.wait_for_status(name, "its yearly tick planned", planned)
    assert finished(before) == 0

    cluster.kubectl("annotate", "tasks.cadenza.dev", name, f"{TRIGGER_ANNOTATION}=e2e-1")
    status = cluster.wait_for_status(name, "the manual run counted", lambda s: counted(s) == 1)
    assert status["lastExecution"]["phase"] == "Succeeded", status["lastExecution"]
    assert status["lastExecution"]["pod"] in executor_pods(cluster)
    assert status["nextScheduleTime"] == before["nextScheduleTime"]  # the schedule is untouched


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"executionMode": "Sometimes"}, "spec.executionMode"),
        ({"timeoutSeconds": 0}, "spec.timeoutSeconds"),
        ({"maxConcurrent": 2, "executionMode": "Skip"}, "spec.maxConcurrent"),
        ({"retry": {"backoffSeconds": 600}}, "spec.retry.maxBackoffSeconds"),
        ({"schedule": "every day"}, "spec.schedule"),
    ],
    ids=["enum", "bound", "mode-rule", "retry-rule", "schedule-shape"],
)
def test_a_bad_task_is_refused_naming_the_field(
    cluster: Cluster, tasks: Tasks, change: dict[str, Any], field: str
) -> None:
    name = f"e2e-bad-{secrets.token_hex(4)}"
    tasks.created.append(name)
    # The schema refuses these before any admission webhook is asked, so the message is the
    # same with the chart's webhook (kind) and without it (the local demo).
    manifest = tasks.manifest(name, EVERY_SECOND)
    manifest["spec"].update(change)
    refused = cluster.apply(manifest, check=False)
    assert refused.returncode != 0, refused.stdout
    assert field in refused.stderr, refused.stderr
    assert cluster.get("tasks.cadenza.dev", name) is None


def test_suspending_a_task_stops_its_runs(cluster: Cluster, tasks: Tasks, clock: Clock) -> None:
    name = tasks.create(EVERY_SECOND)
    cluster.wait_for_status(name, "a successful run", lambda s: counted(s) >= 1)

    cluster.kubectl("patch", "tasks.cadenza.dev", name, "--type=merge", "-p",
                    '{"spec": {"suspend": true}}')  # fmt: skip
    suspended = cluster.wait_for_status(
        name,
        "Scheduled=False, reason Suspended",
        lambda s: (
            condition(s, "Scheduled").get("reason") == "Suspended"
            and not s.get("active")
            and "nextScheduleTime" not in s
        ),
    )
    settled = finished(suspended)
    clock.advance(3)
    # A tick already claimed when the patch arrived may still finish; none after it.
    assert finished(cluster.task_status(name)) <= settled + 1


def test_deleting_a_task_removes_it_and_leaves_the_others_running(
    cluster: Cluster, tasks: Tasks, clock: Clock
) -> None:
    name = tasks.create(EVERY_SECOND)
    cluster.wait_for_status(name, "a successful run", lambda s: counted(s) >= 1)

    cluster.kubectl("delete", "tasks.cadenza.dev", name, "--wait=true", "--timeout=60s")
    assert cluster.get("tasks.cadenza.dev", name) is None
    # No finalizer holds it and nothing recreates it; the scheduler keeps firing the others.
    clock.advance(2)
    assert cluster.get("tasks.cadenza.dev", name) is None
    listed = cluster.kubectl("get", "tasks.cadenza.dev", "-l", E2E_LABEL, "-o", "name")
    assert f"task.cadenza.dev/{name}" not in listed.stdout.split()


def test_the_rest_api_triggers_lists_and_deletes(cluster: Cluster, tasks: Tasks, api: Api) -> None:
    name = tasks.create(YEARLY)
    cluster.wait_for_status(name, "its yearly tick planned", planned)
    base = f"/api/v1/namespaces/{cluster.namespace}/tasks/{name}"

    status, answer = api.call("POST", f"{base}/trigger", {"Idempotency-Key": "e2e-api-1"})
    assert status in (200, 202), answer
    assert answer["triggerKey"] == "e2e-api-1"

    def succeeded_run() -> dict[str, Any] | None:
        code, page = api.call("GET", f"{base}/executions")
        assert code == 200, page
        runs = [r for r in page["items"] if r["triggerKey"] == "e2e-api-1"]
        return runs[0] if runs and runs[0]["status"] == "succeeded" else None

    run = wait_for(succeeded_run, cluster.timeout, f"the API's run of {name} to succeed")
    assert run is not None
    assert run["origin"] == "manual" and run["task"] == name
    if answer["executionId"] is not None:
        assert run["id"] == answer["executionId"]
    cluster.wait_for_status(name, "the run counted", lambda s: counted(s) == 1)

    status, _ = api.call("DELETE", base)
    assert status == 204
    wait_for(
        lambda: cluster.get("tasks.cadenza.dev", name) is None,
        cluster.timeout,
        f"Task {name} deleted through the API to be gone",
    )
    status, _ = api.call("GET", base)
    assert status == 404

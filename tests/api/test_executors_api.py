"""Executors outside the cluster, end to end: the original system's two curl bodies verbatim, a
real sidecar process on a loopback address (no Pod object), runs dispatched to its base URL,
heartbeats, status, re-registration and deregistration, all through the REST API."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cadenza.devenv.pods import SidecarPod
from tests.api.conftest import ALL_VERBS, Api, Callers
from tests.support import health_url
from tests.support.scenario import _free_address

pytestmark = [pytest.mark.controlplane, pytest.mark.mariadb]

T = TypeVar("T")

TASK_BODY = {
    "name": "test_task",
    "cron_expression": "*/10 * * * * *",
    "execution_mode": "parallel",
    "load_balance_strategy": "round_robin",
}
REGISTER_BODY = {
    "name": "sample-executor",
    "instance_id": "executor-001",
    "base_url": "http://localhost:9090",
    "health_check_url": "http://localhost:9090/health",
    "tasks": [{"task_name": "test_task", "cron_expression": "*/10 * * * * *"}],
}


def eventually(read: Callable[[], T | None], what: str, timeout: float = 60.0) -> T:
    """The first truthy ``read()``, polled until ``timeout``; fails naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def endpoint(api: Api, instance: str = "executor-001") -> dict[str, Any]:
    answer = api.call("GET", "/api/v1/executors/sample-executor")
    assert answer.status == 200, answer.body
    return next(e for e in answer.body["endpoints"] if e["instanceId"] == instance)


def runs_on(api: Api, instance: str) -> list[dict[str, Any]]:
    answer = api.call("GET", "/api/v1/tasks/test_task/executions?status=succeeded")
    assert answer.status == 200, answer.body
    return [r for r in answer.body["items"] if r["pod"] == instance]


def sample_executor(api: Api) -> dict[str, Any]:
    answer = api.call("GET", "/api/v1/executors/sample-executor")
    assert answer.status == 200, answer.body
    return answer.body  # type: ignore[no-any-return]


def patch_executor(api: Api, patch: dict[str, Any]) -> None:
    api.kubectl(
        "patch", "executors.cadenza.dev", "sample-executor", "-n", api.namespace,
        "--type=merge", "-p", json.dumps(patch),
    )  # fmt: skip


OVER = ("succeeded", "failed", "timed_out", "cancelled", "skipped", "lost")


def received(sidecar: SidecarPod) -> list[str]:
    """The attempts (``run-attempt``) the endpoint's app was handed, from its own ledger."""
    if not sidecar.ledger.exists():
        return []
    lines = sidecar.ledger.read_text().splitlines()
    return [str(json.loads(line)["executionId"]) for line in lines if line.strip()]


def no_run_reaches(api: Api, sidecar: SidecarPod, instance: str = "executor-001") -> None:
    """Once the pool stopped offering ``instance``, prove on a positive signal that it gets no
    run while the ticks of ``test_task`` keep being claimed: wait until no run sent to it is
    still open (nothing sent before can land later), note its ledger, then wait for two more
    runs of the Task to end; no attempt of theirs went to ``instance`` and its ledger did not
    grow."""

    def runs() -> list[dict[str, Any]]:
        return api.sql(
            "SELECT id, status, pod_name FROM task_executions"
            " WHERE namespace = %s AND task_name = 'test-task' ORDER BY id",
            api.namespace,
        )

    def quiet() -> list[int] | None:
        rows = runs()
        if any(r["pod_name"] == instance and r["status"] not in OVER for r in rows):
            return None
        return [max((r["id"] for r in rows), default=0)]

    (fence,) = eventually(quiet, f"the runs sent to {instance} to end")
    before = received(sidecar)
    later = eventually(
        lambda: (
            len(new := [r for r in runs() if r["id"] > fence and r["status"] in OVER]) >= 2 and new
        ),
        "two more runs of the Task to be claimed and end",
        timeout=90,
    )
    ids = [r["id"] for r in later]
    marks = ", ".join(["%s"] * len(ids))
    attempts = api.sql(
        f"SELECT execution_id, pod_name FROM execution_attempts WHERE execution_id IN ({marks})",
        *ids,
    )
    assert [r for r in later if r["pod_name"] == instance] == []
    assert [a for a in attempts if a["pod_name"] == instance] == []
    assert received(sidecar) == before, f"{instance} was handed a run"


def back_in_rotation(api: Api) -> None:
    """``online`` makes the endpoint take runs again: a triggered run goes to it."""
    online = api.call("PUT", "/api/v1/executors/executor-001/status", {"status": "online"})
    assert online.status == 200 and online.body["state"] == "Online"
    eventually(lambda: sample_executor(api)["healthyPods"] == 1, "the endpoint to take runs again")
    fired = api.call("POST", "/api/v1/tasks/test_task/trigger")
    assert fired.status == 200, fired.body
    run_id = fired.body["executionId"]
    eventually(
        lambda: api.call("GET", f"/api/v1/executions/{run_id}").body["pod"] == "executor-001",
        "the run on the endpoint back online",
    )


@pytest.fixture(scope="module")
def outside(api: Api, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The verbatim Task and registration, then the same instance registered again at a real
    sidecar on a loopback address (the verbatim base URL is nobody's in a test)."""
    created = api.call("POST", "/api/v1/tasks", TASK_BODY)
    assert created.status == 201, created.body
    first = api.call("POST", "/api/v1/executors/register", REGISTER_BODY)
    assert first.status == 201, first.body
    assert first.body["created"] and first.body["token"]
    assert first.body["tasks"] == ["test-task"] and first.body["createdTasks"] == []
    assert first.body["heartbeatSeconds"] == 10
    # The demo app behind the sidecar knows the handlers echo, sleep, fail and flaky.
    assert api.call("PATCH", "/api/v1/tasks/test_task", {"handler": "echo"}).status == 200
    ip = _free_address()
    workdir: Path = tmp_path_factory.mktemp("outside")
    sidecar = SidecarPod("executor-001", api.namespace, ip, workdir, {}, token=first.body["token"])
    # Heartbeats are tested on their own: until then a long interval.
    again = dict(REGISTER_BODY, base_url=f"http://{ip}:9090", heartbeat_seconds=600)
    del again["health_check_url"]
    try:
        sidecar.start_processes()
        second = api.call("POST", "/api/v1/executors/register", again)
        assert second.status == 200, second.body
        assert not second.body["created"] and second.body["token"] == first.body["token"]
        # Probes every second so that health follows within the tests' deadlines.
        patch_executor(api, {"spec": {"healthCheck": {"periodSeconds": 1, "timeoutSeconds": 1}}})
        yield {"ip": ip, "sidecar": sidecar, "token": first.body["token"]}
    finally:
        sidecar.stop_processes()


def test_registration_makes_an_executor_with_an_endpoint_and_joins_the_task(
    api: Api, outside: dict[str, Any]
) -> None:
    stored = api.call("GET", "/api/v1/executors/sample-executor").body
    assert [e["instanceId"] for e in stored["endpoints"]] == ["executor-001"]
    assert stored["endpoints"][0]["baseUrl"] == f"http://{outside['ip']}:9090"
    assert stored["endpoints"][0]["healthCheckUrl"] is None  # re-registration replaced it
    assert stored["selector"] is None and stored["heartbeatSeconds"] == 600
    task = api.call("GET", "/api/v1/tasks/test_task").body
    assert "sample-executor" in [e["name"] for e in task["spec"]["executors"]]
    listed = api.call("GET", "/api/v1/executors").body["items"]
    assert "sample-executor" in [e["name"] for e in listed]
    rows = api.sql(
        "SELECT instance_id, executor_name FROM executor_heartbeats WHERE namespace = %s",
        api.namespace,
    )
    assert rows == [{"instance_id": "executor-001", "executor_name": "sample-executor"}]


def test_the_task_fires_on_the_outside_executor_and_its_history_is_served(
    api: Api, outside: dict[str, Any]
) -> None:
    scheduled = eventually(lambda: runs_on(api, "executor-001"), "a scheduled run to succeed")
    assert scheduled[0]["executor"] == "sample-executor"
    fired = api.call("POST", "/api/v1/tasks/test_task/trigger")
    assert fired.status == 200, fired.body
    run_id = fired.body["executionId"]

    def finished() -> dict[str, Any] | None:
        run = api.call("GET", f"/api/v1/executions/{run_id}").body
        return run if run["status"] == "succeeded" else None

    run = eventually(finished, "the triggered run to succeed")
    assert run["pod"] == "executor-001" and run["origin"] in ("manual", "api")
    assert outside["sidecar"].ledger.exists()


def test_heartbeats_keep_it_healthy_and_missing_ones_make_it_unhealthy(
    api: Api, outside: dict[str, Any]
) -> None:
    eventually(lambda: endpoint(api)["healthy"] is True, "the endpoint to be healthy")
    beat = api.call("POST", "/api/v1/executors/executor-001/heartbeat")
    assert beat.status == 200, beat.body
    assert beat.body["executor"] == "sample-executor"
    again = dict(REGISTER_BODY, base_url=f"http://{outside['ip']}:9090", heartbeat_seconds=1)
    del again["health_check_url"]
    assert api.call("POST", "/api/v1/executors/register", again).status == 200
    silent = eventually(
        lambda: (e := endpoint(api))["healthy"] is False and e, "missed heartbeats to show"
    )
    assert "heartbeat" in (silent["lastError"] or "")

    def beating() -> bool:
        assert api.call("POST", "/api/v1/executors/executor-001/heartbeat").status == 200
        return endpoint(api)["healthy"] is True

    eventually(beating, "heartbeats to make it healthy again")
    again["heartbeat_seconds"] = 600
    assert api.call("POST", "/api/v1/executors/register", again).status == 200


def probed_after(api: Api, target: health_url.HealthUrl, answers: int) -> bool:
    """The health URL answered ``answers`` probes, and the Executor's status already shows a
    probe started after the last of them (so its health has taken them all in)."""
    given = target.answers()
    if len(given) < answers:
        return False
    pod = next(p for p in sample_executor(api)["pods"] if p["name"] == "executor-001")
    probed = pod.get("lastProbeTime")
    return probed is not None and datetime.fromisoformat(probed) > given[answers - 1].at


def test_the_health_url_decides_health_with_the_executor_thresholds(
    api: Api, outside: dict[str, Any]
) -> None:
    """Counted in probes of the endpoint's health URL: ``failureThreshold`` failed probes in a
    row make it unhealthy and fewer never do; then ``successThreshold`` good probes in a row
    make it healthy again and fewer never do.

    Heartbeats are the other input: an endpoint is healthy only while its probes say so AND,
    as its Executor sets ``heartbeatSeconds``, its last heartbeat is younger than three
    intervals. Here the interval is 600 s and a heartbeat is sent first, so the heartbeats stay
    fresh throughout and only the health URL moves the endpoint's health. The test serves that
    URL (:mod:`tests.support.health_url`) to count each probe and answer it as it says; runs
    still go to the real sidecar at the base URL."""
    failures, successes = 3, 3
    patch_executor(api, {"spec": {"healthCheck": {
        "failureThreshold": failures, "successThreshold": successes}}})  # fmt: skip
    beat = api.call("POST", "/api/v1/executors/executor-001/heartbeat")
    assert beat.status == 200, beat.body
    base_url = f"http://{outside['ip']}:9090"
    with health_url.serving() as target:
        probed = dict(REGISTER_BODY, base_url=base_url, health_check_url=target.url,
                      heartbeat_seconds=600)  # fmt: skip
        try:
            assert api.call("POST", "/api/v1/executors/register", probed).status == 200
            eventually(
                lambda: target.answers() and endpoint(api)["healthy"] is True,
                "probes of the health URL to find the endpoint healthy",
            )
            # One failure fewer than the threshold in a row, over and over: never unhealthy (and
            # once unhealthy, one success at a time would never bring it back).
            target.play(health_url.cycle(ok=1, failed=failures - 1))
            eventually(lambda: probed_after(api, target, 3 * failures), "three such rounds")
            assert endpoint(api)["healthy"] is True

            # One success (ending any run of failures), then only failures.
            target.play(lambda n: n == 0)
            unhealthy = eventually(
                lambda: (e := endpoint(api))["healthy"] is False and e,
                "failed probes to make the endpoint unhealthy",
            )
            assert len(target.answers()) - 1 >= failures
            assert unhealthy["lastError"], unhealthy

            # One success fewer than the threshold in a row, over and over: never healthy.
            target.play(health_url.cycle(ok=successes - 1, failed=1))
            eventually(lambda: probed_after(api, target, 3 * successes), "three such rounds")
            assert endpoint(api)["healthy"] is False

            # One failure (ending any run of successes), then only successes.
            target.play(lambda n: n != 0)
            eventually(
                lambda: endpoint(api)["healthy"] is True,
                "good probes to make the endpoint healthy again",
            )
            assert len(target.answers()) - 1 >= successes
        finally:
            unprobed = dict(REGISTER_BODY, base_url=base_url, heartbeat_seconds=600)
            del unprobed["health_check_url"]
            assert api.call("POST", "/api/v1/executors/register", unprobed).status == 200
            patch_executor(api, {"spec": {"healthCheck": {
                "failureThreshold": None, "successThreshold": None}}})  # fmt: skip
    eventually(lambda: endpoint(api)["healthy"] is True, "the sidecar's /healthz to be probed")


def test_draining_takes_it_out_of_rotation_and_online_brings_it_back(
    api: Api, outside: dict[str, Any]
) -> None:
    drained = api.call("PUT", "/api/v1/executors/executor-001/status", {"status": "draining"})
    assert drained.status == 200, drained.body
    assert drained.body["state"] == "Draining"
    eventually(
        lambda: (e := sample_executor(api))["healthyPods"] == 0 and e["totalPods"] == 1,
        "the draining endpoint to leave rotation",
    )
    back_in_rotation(api)


def test_offline_gets_no_run_and_online_brings_it_back(api: Api, outside: dict[str, Any]) -> None:
    offline = api.call("PUT", "/api/v1/executors/executor-001/status", {"status": "offline"})
    assert offline.status == 200, offline.body
    assert offline.body["state"] == "Offline"
    eventually(
        lambda: (e := sample_executor(api))["healthyPods"] == 0 and e["totalPods"] == 1,
        "the offline endpoint to leave rotation",
    )
    shown = endpoint(api)
    assert shown["state"] == "Offline" and shown["healthy"] is not True, shown
    no_run_reaches(api, outside["sidecar"])
    back_in_rotation(api)


def sleeping_run(api: Api) -> int:
    """A run of the Task ``sleepy`` sleeping on the outside executor."""
    fired = api.call("POST", "/api/v1/tasks/sleepy/trigger")
    assert fired.status == 200, fired.body
    run_id: int = fired.body["executionId"]
    eventually(
        lambda: api.call("GET", f"/api/v1/executions/{run_id}").body["status"] == "running",
        "the run to be running on the endpoint",
    )
    return run_id


@pytest.fixture(scope="module")
def sleepy(api: Api, outside: dict[str, Any]) -> None:
    body = {
        "name": "sleepy",
        "schedule": "0 0 1 1 *",
        "executors": ["sample-executor"],
        "handler": "sleep",
        "payload": {"seconds": 120},
    }
    assert api.call("POST", "/api/v1/tasks", body).status == 201


def test_cancel_stops_the_run_on_its_endpoint(
    api: Api, outside: dict[str, Any], sleepy: None
) -> None:
    run_id = sleeping_run(api)
    attempt = api.call("GET", f"/api/v1/executions/{run_id}").body["attempt"]
    answer = api.call("POST", f"/api/v1/executions/{run_id}/cancel")
    assert answer.status == 200, answer.body
    assert answer.body["status"] == "cancelled" and answer.body["previousStatus"] == "running"
    assert answer.body["podNotified"] is True and answer.body["pod"] == "executor-001"
    run = api.call("GET", f"/api/v1/executions/{run_id}").body
    assert run["status"] == "cancelled" and "REST API" in run["error"]
    # The sidecar itself stopped the handler.
    request = urllib.request.Request(
        f"http://{outside['ip']}:9090/v1/executions/{run_id}-{attempt}",
        headers={"Authorization": f"Bearer {outside['token']}"},
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert json.load(resp)["state"] == "cancelled"
    again = api.call("POST", f"/api/v1/executions/{run_id}/cancel")
    assert again.status == 409, again.body
    assert api.call("POST", "/api/v1/executions/999999999/cancel").status == 404
    bad = api.call("POST", "/api/v1/executions/x1/cancel")
    assert bad.status == 400 and bad.body["field"] == "id"


def test_cancel_needs_a_token_and_the_cancel_verb(
    api: Api, callers: Callers, outside: dict[str, Any], sleepy: None
) -> None:
    run_id = sleeping_run(api)
    path = f"/api/v1/executions/{run_id}/cancel"
    assert api.call("POST", path, token="").status == 401
    assert api.call("POST", path, token="not-a-kubernetes-token").status == 401
    without = callers.token("without-cancel", tuple(v for v in ALL_VERBS if v != "cancel"))
    assert api.call("POST", path, token=without).status == 403
    only = callers.token("only-cancel", ("cancel",))
    assert api.call("POST", path, token=only).status == 200


def listed(api: Api, state: str) -> list[str]:
    answer = api.call("GET", f"/api/v1/tasks?state={state}")
    assert answer.status == 200, answer.body
    return [t["name"] for t in answer.body["items"]]


def test_state_filters_find_running_and_failing_tasks(
    api: Api, outside: dict[str, Any], sleepy: None
) -> None:
    """``state=running``: a Task with a run in flight on its endpoint; ``state=failing``: a
    Task whose last run failed there (the ``fail`` handler); an idle Task is neither."""
    idle = {"name": "idle", "schedule": "0 0 1 1 *", "executors": ["sample-executor"]}
    assert api.call("POST", "/api/v1/tasks", idle).status == 201
    run_id = sleeping_run(api)
    eventually(lambda: "sleepy" in listed(api, "running"), "the sleeping Task to list running")
    assert "idle" not in listed(api, "running")
    assert api.call("POST", f"/api/v1/executions/{run_id}/cancel").status == 200
    eventually(lambda: "sleepy" not in listed(api, "running"), "its run over, not running")

    failing = dict(idle, name="failing", handler="fail", retries=0)
    assert api.call("POST", "/api/v1/tasks", failing).status == 201
    fired = api.call("POST", "/api/v1/tasks/failing/trigger")
    assert fired.status == 200, fired.body
    failed = eventually(
        lambda: (r := api.call("GET", f"/api/v1/executions/{fired.body['executionId']}").body)[
            "status"] == "failed" and r,
        "the run of the fail handler to fail",
    )  # fmt: skip
    assert failed["pod"] == "executor-001"
    eventually(lambda: "failing" in listed(api, "failing"), "the failing Task to list failing")
    assert "idle" not in listed(api, "failing")
    assert "failing" not in listed(api, "running")


def test_an_instance_id_belongs_to_one_executor(api: Api, outside: dict[str, Any]) -> None:
    taken = dict(REGISTER_BODY, name="another-executor", tasks=[])
    answer = api.call("POST", "/api/v1/executors/register", taken)
    assert answer.status == 409 and answer.body["field"] == "instance_id"
    missing = api.call("POST", "/api/v1/executors/nobody-here/heartbeat")
    assert missing.status == 404


def test_registration_creates_a_missing_task_with_the_original_defaults(api: Api) -> None:
    body = {
        "name": "second_executor",
        "instance_id": "second-001",
        "base_url": "http://127.0.0.1:1",
        "tasks": [{"task_name": "fresh_task", "cron_expression": "0 0 1 1 *"}],
    }
    answer = api.call("POST", "/api/v1/executors/register", body)
    assert answer.status == 201, answer.body
    assert answer.body["createdTasks"] == ["fresh-task"]
    task = api.call("GET", "/api/v1/tasks/fresh_task").body
    assert task["originalName"] == "fresh_task"
    assert task["spec"]["schedule"] == "0 0 1 1 *"
    assert task["spec"]["executionMode"] == "Parallel"
    assert task["spec"]["loadBalanceStrategy"] == "RoundRobin"
    assert [e["name"] for e in task["spec"]["executors"]] == ["second-executor"]
    secret = api.kubectl(
        "get", "secret", "second-executor-dispatch-token", "-n", api.namespace,
        "-o", "jsonpath={.metadata.ownerReferences[0].name}",
    )  # fmt: skip
    assert secret == "second-executor"
    assert api.call("DELETE", "/api/v1/executors/second-001").status == 204
    assert api.call("GET", "/api/v1/executors/second_executor").status == 404


def test_deregistering_removes_the_endpoint_and_the_empty_executor(
    api: Api, outside: dict[str, Any]
) -> None:
    uid = api.call("GET", "/api/v1/executors/sample-executor").body["uid"]
    gone = api.call("DELETE", "/api/v1/executors/executor-001")
    assert gone.status == 204, gone.body
    assert api.call("GET", "/api/v1/executors/sample-executor").status == 404
    assert api.call("POST", "/api/v1/executors/executor-001/heartbeat").status == 404
    eventually(
        lambda: not api.sql("SELECT 1 FROM executor_instances WHERE executor_uid = %s", uid),
        "the endpoint to leave executor_instances (no more dispatches to it)",
    )

    def unavailable() -> bool:
        conditions = api.call("GET", "/api/v1/tasks/test_task").body["status"].get("conditions")
        return any(
            c["type"] == "ExecutorAvailable" and c["status"] == "False" for c in conditions or []
        )

    eventually(unavailable, "the Task to have no executor available")
    no_run_reaches(api, outside["sidecar"])

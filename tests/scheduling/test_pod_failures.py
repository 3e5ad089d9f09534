"""Executor pods and the callback path failing under real runs: no run is lost or stuck, none runs
twice.

- A sidecar killed with ``kill -9`` mid-run: the leader notices by the run's deadline, counts the
  attempt ``lost`` (naming the pod) and retries it on another pod when the policy allows.
- Every operator replica down while a run finishes: the sidecar spools the result, retries the
  callback, and the first replica back applies it.
- The same dispatch sent twice runs once.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cadenza.devenv.controlplane import ControlPlane, free_port
from cadenza.devenv.pods import SidecarPod
from tests.scheduling.test_load_balancing_e2e import (
    EVERY_SECOND,
    FINAL,
    last_id,
    private_addresses,
    wait_healthy,
)
from tests.support import scenario as scenario_module
from tests.support import wait_for
from tests.support.operators import OperatorProcess
from tests.support.scenario import Scenario, executor, scenario, task

pytestmark = pytest.mark.usefixtures("crds")


@pytest.fixture
def scene(
    controlplane: ControlPlane,
    database: str,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Scenario]:
    monkeypatch.setattr(scenario_module, "_addresses", private_addresses())
    with scenario(controlplane, database, namespace, tmp_path) as s:
        yield s


# -- helpers ----------------------------------------------------------------------------------


def http(
    method: str, url: str, body: Any = None, token: str | None = None
) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, dict(json.load(resp))
    except urllib.error.HTTPError as exc:
        return exc.code, dict(json.load(exc))


def healthz(pod: SidecarPod) -> dict[str, Any]:
    try:
        return http("GET", f"{pod.sidecar_url}/healthz")[1]
    except OSError:
        return {}


def kill_9(pod: SidecarPod) -> None:
    """The pod's sidecar and app die at once: no drain, no callback, nothing spooled."""
    for proc in pod.processes:
        proc.kill()
    for proc in pod.processes:
        proc.wait(timeout=10)


def suspend(scene: Scenario, name: str) -> None:
    scene.plane.kubectl(
        "patch", "task", name, "-n", scene.namespace, "--type=merge",
        "-p", json.dumps({"spec": {"suspend": True}}),
    )  # fmt: skip


def running_on_some_pod(scene: Scenario, name: str) -> dict[str, Any]:
    """The newest first attempt the demo app has started and the leader knows is running (the
    newest has the most of its run still ahead)."""
    started = {e["executionId"] for e in scene.ledger()}
    going = [
        row
        for row in scene.runs(name)
        if row["status"] == "running" and row["attempt"] == 1 and f"{row['id']}-1" in started
    ]
    return going[-1] if going else {}


def run_row(scene: Scenario, name: str, run: int) -> dict[str, Any]:
    return next(r for r in scene.runs(name) if r["id"] == run)


def all_final(scene: Scenario, name: str) -> list[dict[str, Any]]:
    runs = scene.runs(name)
    return runs if runs and all(r["status"] in FINAL for r in runs) else []


def killed_mid_run(scene: Scenario, name: str, retry: dict[str, Any]) -> tuple[str, int]:
    """Start ``sleep 4`` runs every second with a 3 s timeout over three pods, kill -9 a pod
    while a run is running there, stop firing; the pod's name and the run's id."""
    scene.add_pods("pool", 3)
    scene.apply(executor("pool"))
    wait_healthy(scene, 3)
    scene.apply(
        task(
            name, EVERY_SECOND, handler="sleep", payload={"seconds": 4}, timeoutSeconds=3,
            retry=retry,
        )
    )  # fmt: skip
    victim = wait_for(lambda: running_on_some_pod(scene, name), 20, "a run running on a pod")
    pod = str(victim["pod_name"])
    kill_9(scene.pods[pod])
    suspend(scene, name)
    return pod, int(victim["id"])


# -- a sidecar dies mid-run -------------------------------------------------------------------


def test_a_run_whose_pod_is_killed_is_retried_on_another_pod(scene: Scenario) -> None:
    dead, victim = killed_mid_run(
        scene, "k", {"maxAttempts": 2, "backoffSeconds": 1, "jitterPercent": 0}
    )

    # Every run ends, none stays running: attempt 1 times out (or is lost with the pod) after
    # 3 s + 2 s grace, the retry 1 s later times out after 3 s more.
    runs = wait_for(lambda: all_final(scene, "k"), 25, "every run to reach a final state")

    lost_on_dead = 0
    for row in runs:
        tried = scene.attempts(row["id"])
        assert [a["attempt"] for a in tried] == list(range(1, row["attempt"] + 1)), tried
        first = tried[0]
        if first["pod_name"] != dead or first["status"] != "lost":
            continue
        lost_on_dead += 1
        assert dead in (first["error"] or ""), first
        # Retried elsewhere, and that attempt ran to its own end (here: its timeout).
        assert row["attempt"] == 2, (row, tried)
        assert tried[1]["pod_name"] not in (None, dead), tried
        assert row["status"] in ("succeeded", "timed_out", "failed"), row
        assert tried[1]["status"] == row["status"], tried
        ran = [e for e in scene.ledger() if e["executionId"] == f"{row['id']}-2"]
        assert [e["pod"] for e in ran] == [tried[1]["pod_name"]], ran
    assert lost_on_dead >= 1, [scene.attempts(r["id"]) for r in runs]
    victim_row = next(r for r in runs if r["id"] == victim)
    assert scene.attempts(victim)[0]["pod_name"] == dead, victim_row
    # Runs that never met the dead pod were not disturbed into extra attempts.
    for row in runs:
        assert row["attempt"] <= 2


def test_without_retries_a_run_on_a_killed_pod_ends_lost_naming_the_pod(
    scene: Scenario,
) -> None:
    dead, victim = killed_mid_run(scene, "k1", {"maxAttempts": 1})

    runs = wait_for(lambda: all_final(scene, "k1"), 20, "every run to reach a final state")

    row = next(r for r in runs if r["id"] == victim)
    assert row["status"] in ("lost", "failed"), row
    assert row["attempt"] == 1 and row["pod_name"] == dead, row
    assert dead in (row["error"] or ""), row
    (only,) = scene.attempts(victim)
    assert only["pod_name"] == dead and only["status"] == row["status"], only
    # No second attempt anywhere: the run key reached one app, once.
    ran = [e["pod"] for e in scene.ledger() if e["executionId"].startswith(f"{victim}-")]
    assert ran == [dead], ran


# -- the callback receiver is down ------------------------------------------------------------


def stable_replica(scene: Scenario, port: int, name: str) -> OperatorProcess:
    """A replica on ``port``: stands in for the Service a cluster puts in front of replicas, so a
    callback URL handed out by one replica reaches whichever replica runs later."""
    member = scene.replicas.add(name)
    member.port = port
    scene.replicas.wait_indexed()
    return member


def test_a_result_reaches_a_replica_started_after_the_run_finished(
    controlplane: ControlPlane,
    database: str,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scenario_module, "_addresses", private_addresses())
    # Retry an undelivered callback at least every second (the default cap is 30 s).
    monkeypatch.setenv("CADENZA_SIDECAR_CALLBACK_BACKOFF_MAX_SECONDS", "1")
    port = free_port()
    service = {
        "CADENZA_HTTP_PORT": str(port),
        "CADENZA_HTTP_ADVERTISE_URL": f"http://127.0.0.1:{port}",
    }
    with scenario(controlplane, database, namespace, tmp_path, replicas=0, **service) as scene:
        stable_replica(scene, port, "first")
        scene.add_pods("pool", 2)
        scene.apply(executor("pool"))
        wait_healthy(scene, 2)
        scene.apply(task("cb", EVERY_SECOND, handler="sleep", payload={"seconds": 3}))
        wait_for(lambda: running_on_some_pod(scene, "cb"), 20, "a run running")

        scene.replicas.stop_all()
        # The newest run the database still calls running: its pod has it, or has its result.
        victim = wait_for(lambda: running_on_some_pod(scene, "cb"), 5, "a run still running")
        pod = scene.pods[str(victim["pod_name"])]
        view = f"{pod.sidecar_url}/v1/executions/{victim['id']}-1"

        def holds_result() -> bool:
            pending = int(healthz(pod).get("pendingCallbacks", 0))
            return pending >= 1 and http("GET", view, token=pod.token)[1]["state"] == "succeeded"

        wait_for(holds_result, 15, "the sidecar to hold the run's undelivered result")
        # Finished on the pod, unknown to the database: nobody was there to hear it.
        assert run_row(scene, "cb", victim["id"])["status"] == "running"
        suspend(scene, "cb")  # nothing new fires once a replica is back
        stopped_at = last_id(scene, "cb")

        stable_replica(scene, port, "late")

        row = wait_for(
            lambda: (r := run_row(scene, "cb", victim["id"]))["status"] == "succeeded" and r,
            20,
            "the spooled result to be applied",
        )
        assert json.loads(row["result"]) == {"slept": 3} and row["pod_name"] == pod.name, row
        assert row["finished_at"] is not None and row["started_at"] is not None
        wait_for(lambda: healthz(pod).get("pendingCallbacks") == 0, 10, "the spool to drain")
        # Every run that was going when the replicas stopped ended once, on its pod.
        runs = wait_for(lambda: all_final(scene, "cb"), 20, "every run to reach a final state")
        keys = [e["executionId"] for e in scene.ledger()]
        assert len(keys) == len(set(keys)), keys
        for r in runs:
            if r["id"] <= stopped_at and r["pod_name"]:
                assert r["status"] == "succeeded", r


# -- idempotent dispatch ----------------------------------------------------------------------


def test_the_same_dispatch_sent_twice_runs_once(scene: Scenario) -> None:
    (pod,) = scene.add_pods("pool", 1)
    scene.apply(executor("pool"))  # its dispatch-token Secret: the pod starts with that token
    callback = scene.replicas.members[0].url
    body = {
        "executionId": "dup-1",
        "taskUid": "00000000-0000-0000-0000-000000000001",
        "task": f"{scene.namespace}/dup",
        "epoch": 1,
        "handler": "sleep",
        "payload": {"seconds": 1},
        "scheduledAt": "2030-01-01T00:00:00Z",
        "attempt": 1,
        "timeoutSeconds": 30,
        # No such run: the replica answers 404 and the sidecar drops the report for good.
        "callbackUrl": f"{callback}/api/v1/callbacks/999999999",
        "callbackToken": "t0ken",
    }
    url = f"{pod.sidecar_url}/v1/executions"

    first = http("POST", url, body, token=pod.token)
    again = http("POST", url, {**body, "payload": {"seconds": 0}, "attempt": 2}, token=pod.token)
    assert first[0] == 202 and first[1]["executionId"] == "dup-1", first
    assert again[0] == 200 and again[1]["executionId"] == "dup-1", again
    assert again[1]["attempt"] == 1, again  # the first body counts, whatever the second says

    done = wait_for(
        lambda: (v := http("GET", f"{url}/dup-1", token=pod.token)[1])["state"] == "succeeded"
        and v, 10,
        "the run to finish",
    )  # fmt: skip
    assert done["result"] == {"slept": 1}
    late = http("POST", url, body, token=pod.token)
    assert late[0] == 200 and late[1]["state"] == "succeeded", late

    assert [e["executionId"] for e in scene.ledger()] == ["dup-1"]
    wait_for(lambda: healthz(pod).get("pendingCallbacks") == 0, 10, "the refused report dropped")

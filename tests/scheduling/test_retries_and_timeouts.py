"""Retries, failures and timeouts of one run, as the history, the pods and the Task show them.

Each run here is fired by the manual trigger annotation on a Task whose schedule does not come
round during the test, so exactly the runs the test asks for exist.
"""

from __future__ import annotations

import itertools
import json
import time
import urllib.request
from datetime import datetime
from typing import Any

import pytest

from tests.support import wait_for
from tests.support.scenario import Scenario, executor, task

pytestmark = pytest.mark.usefixtures("crds")

YEARLY = "0 0 1 1 *"
BACKOFF = 1.0
JITTER = 0.1
# From the attempt's end at the pod to the retry's dispatch: callback delivery, then the leader's
# reconcile period (0.5 s) and one database write.
LATENCY = 1.0


def triggered(name: str, value: str, **spec: Any) -> dict[str, Any]:
    manifest = task(name, YEARLY, **spec)
    manifest["metadata"]["annotations"] = {"cadenza.dev/trigger": value}
    return manifest


def run_of(scene: Scenario, name: str, key: str) -> dict[str, Any] | None:
    return next((r for r in scene.runs(name) if r["trigger_key"] == key), None)


def finished(scene: Scenario, name: str, key: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        row = run_of(scene, name, key)
        return row if row and row["finished_at"] and row["status"] != "queued" else None

    return wait_for(done, 30, f"run {key!r} of {name} to finish")


def seconds(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds()


def event(scene: Scenario, name: str, kind: str, reason: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        return next(
            (e for e in scene.events(name) if e["type"] == kind and e["reason"] == reason), None
        )

    return wait_for(found, 20, f"a {kind} event {reason} for {name}")


def test_failed_attempts_retry_on_other_pods_with_growing_delays_then_fail_and_recover(
    scene: Scenario,
) -> None:
    scene.add_pods("pool", 3)
    retry = {"maxAttempts": 3, "backoffSeconds": int(BACKOFF), "jitterPercent": int(JITTER * 100)}
    scene.apply(executor("pool"), triggered("doomed", "1", handler="fail", retry=retry))

    run = finished(scene, "doomed", "1")
    assert run["status"] == "failed" and run["attempt"] == 3 and run["origin"] == "manual"
    assert run["error"]
    attempts = scene.attempts(run["id"])
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert all(a["status"] == "failed" and a["error"] for a in attempts)
    # A retry prefers a pod no earlier attempt used: three attempts, three pods.
    assert len({a["pod_name"] for a in attempts}) == 3
    assert {a["pod_name"] for a in attempts} <= set(scene.pods)
    # The delay before retry n is backoff * 2^(n-1), spread by ±jitter.
    gaps = [
        seconds(later["dispatched_at"], earlier["finished_at"])
        for earlier, later in itertools.pairwise(attempts)
    ]
    print(f"delays between attempts: {[round(g, 3) for g in gaps]} s")
    for n, gap in enumerate(gaps, start=1):
        base = BACKOFF * 2 ** (n - 1)
        assert base * (1 - JITTER) - 0.01 <= gap <= base * (1 + JITTER) + LATENCY, (n, gaps)
    assert gaps[1] > gaps[0]
    # What the pods really ran: each attempt once, with its own key, where the history says.
    calls = sorted(
        (e for e in scene.ledger() if str(e["executionId"]).startswith(f"{run['id']}-")),
        key=lambda e: e["attempt"],
    )
    assert [(c["executionId"], c["attempt"], c["pod"]) for c in calls] == [
        (f"{run['id']}-{a['attempt']}", a["attempt"], a["pod_name"]) for a in attempts
    ]

    def failed_status() -> dict[str, Any] | None:
        status = scene.task_status("doomed")
        last = status.get("lastExecution") or {}
        return status if last.get("phase") == "Failed" else None

    status = wait_for(failed_status, 20, "lastExecution Failed in the status")
    assert status["lastExecution"]["id"] == str(run["id"])
    assert status["lastExecution"]["attempt"] == 3
    assert status["lastExecution"]["message"] == run["error"]
    assert status["consecutiveFailures"] == 1
    assert status["counters"]["failed"] == 1
    warning = event(scene, "doomed", "Warning", "RunFailed")
    assert str(run["id"]) in warning["message"]

    # The same Task with a handler that fails once: attempt 2 succeeds, and after the earlier
    # failure the Task reports its recovery.
    scene.apply(triggered("doomed", "2", handler="flaky", payload={"failures": 1}, retry=retry))
    second = finished(scene, "doomed", "2")
    assert second["status"] == "succeeded" and second["attempt"] == 2
    tries = scene.attempts(second["id"])
    assert [(a["attempt"], a["status"]) for a in tries] == [(1, "failed"), (2, "succeeded")]
    assert tries[0]["pod_name"] != tries[1]["pod_name"]
    recovered = event(scene, "doomed", "Normal", "Recovered")
    assert "1 failed" in recovered["message"]
    status = wait_for(
        lambda: (s := scene.task_status("doomed")).get("consecutiveFailures") == 0 and s,
        20,
        "consecutiveFailures back to 0",
    )
    assert status["lastExecution"]["phase"] == "Succeeded"
    assert status["lastExecution"]["attempt"] == 2
    # Successes post no events: one failure, one recovery.
    reasons = sorted(e["reason"] for e in scene.events("doomed") if e["reason"] != "Skipped")
    assert reasons == ["Recovered", "RunFailed"]


def test_a_run_past_its_timeout_ends_timed_out_and_is_cancelled_at_the_pod(
    scene: Scenario,
) -> None:
    (pod,) = scene.add_pods("pool", 1)
    scene.apply(
        executor("pool"),
        triggered("slow", "go", handler="sleep", payload={"seconds": 10}, timeoutSeconds=2),
    )
    started = wait_for(
        lambda: (r := run_of(scene, "slow", "go")) and r["dispatched_at"] and time.monotonic(),
        30,
        "the run to be dispatched",
    )
    run = finished(scene, "slow", "go")
    took = time.monotonic() - started
    print(f"timed out {took:.1f} s after dispatch was seen")
    assert run["status"] == "timed_out", run
    assert took < 6, "the timeout ended the run well before the handler would have"
    assert seconds(run["finished_at"], run["dispatched_at"]) < 5
    assert run["attempt"] == 1 and len(scene.attempts(run["id"])) == 1
    key = f"{run['id']}-1"
    asked = urllib.request.Request(
        f"{pod.sidecar_url}/v1/executions/{key}", headers={"Authorization": f"Bearer {pod.token}"}
    )
    with urllib.request.urlopen(asked, timeout=5) as resp:
        view = json.load(resp)
    assert view["state"] == "timed_out", view
    # Cancelled, not left sleeping: the pod has nothing in flight any more.
    with urllib.request.urlopen(f"{pod.sidecar_url}/healthz", timeout=5) as resp:
        assert json.load(resp)["inFlight"] == 0
    # No retry with maxAttempts 1: the handler was called once.
    assert [e["executionId"] for e in scene.ledger()] == [key]
    status = wait_for(
        lambda: (
            (s := scene.task_status("slow")).get("lastExecution", {}).get("phase") == "TimedOut"
            and s
        ),
        20,
        "lastExecution TimedOut in the status",
    )
    assert status["consecutiveFailures"] == 1

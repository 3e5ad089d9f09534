"""Task status and events: writes coalesced whatever the fire frequency, and a Task that reached
the cluster invalid (no admission webhook here) reported, never a crash."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from cadenza.devenv.controlplane import ControlPlane
from tests.support import wait_for
from tests.support.scenario import Scenario, executor, scenario, task

pytestmark = pytest.mark.usefixtures("crds")

EVERY_SECOND = "* * * * * *"
MIN_INTERVAL = 2.0
WINDOW_RUNS = 14


def succeeded(scene: Scenario, name: str) -> int:
    return sum(1 for r in scene.runs(name) if r["status"] == "succeeded")


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def test_status_writes_stay_within_the_coalescing_bound_under_a_one_second_schedule(
    controlplane: ControlPlane, database: str, namespace: str, tmp_path: Path
) -> None:
    tuning = {"CADENZA_STATUS_MIN_INTERVAL_SECONDS": str(MIN_INTERVAL)}
    with scenario(controlplane, database, namespace, tmp_path, **tuning) as scene:
        scene.add_pods("pool", 2)
        scene.apply(executor("pool"), task("steady", EVERY_SECOND))
        series = {"task": f"{namespace}/steady"}
        wait_for(
            lambda: (
                succeeded(scene, "steady") >= 2
                and scene.metric("cadenza_task_status_writes_total", **series) >= 1
            ),
            30,
            "the first runs and status writes",
        )
        writes_before = scene.metric("cadenza_task_status_writes_total", **series)
        runs_before = len(scene.runs("steady"))
        status_before = scene.task_status("steady")
        started = time.monotonic()
        wait_for(
            lambda: len(scene.runs("steady")) >= runs_before + WINDOW_RUNS,
            WINDOW_RUNS + 15,
            f"{WINDOW_RUNS} more runs",
        )
        writes = scene.metric("cadenza_task_status_writes_total", **series) - writes_before
        window = time.monotonic() - started
        runs = len(scene.runs("steady")) - runs_before
        print(f"window {window:.1f} s: {runs} runs, {writes:.0f} status writes")
        assert window >= 12
        assert runs >= window - 1
        assert writes <= window / MIN_INTERVAL + 2
        # Coalesced, not starved: the status kept moving with the ticks.
        assert writes >= 2
        status = wait_for(
            lambda: (
                (s := scene.task_status("steady")).get("lastScheduleTime")
                != status_before.get("lastScheduleTime")
                and s
            ),
            10,
            "lastScheduleTime to move",
        )
        assert status["counters"]["succeeded"] > status_before.get("counters", {}).get(
            "succeeded", 0
        )


def test_an_invalid_task_is_reported_not_ready_and_the_others_keep_running(
    scene: Scenario,
) -> None:
    scene.add_pods("pool", 1)
    scene.apply(executor("pool"), task("steady", EVERY_SECOND))
    wait_for(lambda: succeeded(scene, "steady") >= 2, 30, "the valid Task to run")
    leader = scene.leader()
    # Both pass the CRD's schema and CEL rules; only the operator's parser refuses them.
    scene.apply(
        task("february", "0 0 31 2 *"),
        task("martian", EVERY_SECOND, timeZone="Mars/Olympus"),
    )
    for name, field in (("february", "schedule"), ("martian", "timeZone")):
        status = wait_for(
            lambda n=name: (
                (s := scene.task_status(n)) and condition(s, "Ready").get("status") == "False" and s
            ),
            20,
            f"{name} Ready=False",
        )
        ready = condition(status, "Ready")
        assert ready["reason"] == "InvalidSchedule"
        assert field in ready["message"]
        scheduled = condition(status, "Scheduled")
        assert (scheduled["status"], scheduled["reason"]) == ("False", "InvalidSchedule")
        assert "nextScheduleTime" not in status
        warning = wait_for(
            lambda n=name: next(
                (
                    e
                    for e in scene.events(n)
                    if e["type"] == "Warning" and e["reason"] == "InvalidSchedule"
                ),
                None,
            ),
            20,
            f"a Warning event InvalidSchedule for {name}",
        )
        assert field in warning["message"]

    # The operator keeps serving the valid Task: same leader process, still ticking.
    before = succeeded(scene, "steady")
    wait_for(lambda: succeeded(scene, "steady") >= before + 3, 20, "three more runs")
    assert scene.leader() is leader and leader.alive()
    assert scene.runs("february") == [] and scene.runs("martian") == []

    # Fixing the spec makes the Task ready and scheduled.
    scene.apply(task("martian", EVERY_SECOND, timeZone="Europe/Berlin"))
    wait_for(
        lambda: condition(scene.task_status("martian"), "Ready").get("status") == "True",
        20,
        "martian Ready=True once fixed",
    )
    wait_for(lambda: succeeded(scene, "martian") >= 1, 20, "martian to run once fixed")

"""A Task applied with kubectl runs on its schedule on executor pods, and its status tells it."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import pytest

from tests.support import wait_for
from tests.support.scenario import Scenario, executor, task

pytestmark = pytest.mark.usefixtures("crds")


def test_a_task_every_second_runs_each_second_on_the_pods(scene: Scenario) -> None:
    scene.add_pods("pool", 3)
    scene.apply(executor("pool"), task("tick", "* * * * * *", payload={"n": 1}))
    wait_for(
        lambda: len([r for r in scene.runs("tick") if r["status"] == "succeeded"]) >= 8,
        60,
        "eight successful runs",
    )
    first_status = scene.task_status("tick")
    runs = [r for r in scene.runs("tick") if r["status"] == "succeeded"]
    ticks = [r["scheduled_at"] for r in runs]
    # Consecutive seconds, none twice.
    assert len(set(ticks)) == len(ticks)
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(ticks))
    for row in runs:
        assert row["pod_name"] in scene.pods and row["executor_name"] == "pool"
        assert row["origin"] == "schedule" and row["attempt"] == 1
        assert row["dispatched_at"] and row["started_at"] and row["finished_at"]
        assert row["result"] is not None
    # Every run reached a sidecar exactly once.
    keys = [e["executionId"] for e in scene.ledger()]
    assert len(keys) == len(set(keys)), scene.ledger()
    assert {f"{r['id']}-1" for r in runs} <= set(keys)
    # Status moves with the ticks.
    wait_for(
        lambda: (
            scene.task_status("tick").get("nextScheduleTime")
            != first_status.get("nextScheduleTime")
        ),
        30,
        "nextScheduleTime to move",
    )
    status = scene.task_status("tick")
    assert status["lastExecution"]["phase"] in ("Succeeded", "Running", "Dispatched", "Claimed")
    assert datetime.fromisoformat(
        status["nextScheduleTime"].replace("Z", "+00:00")
    ) > datetime.fromisoformat(status["lastScheduleTime"].replace("Z", "+00:00"))
    assert status["counters"]["succeeded"] >= 8
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"Ready": "True", "ExecutorAvailable": "True", "Scheduled": "True"}

"""Manual triggers, suspension and schedule edits never fire retroactive runs.

A third Task ticking every second is the clock of these tests: "nothing fired over a few seconds"
is checked after it has visibly fired a few times, so the scheduler was demonstrably alive.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cadenza.devenv.controlplane import ControlPlane
from tests.support import wait_for
from tests.support.scenario import Scenario, executor, scenario, task

pytestmark = pytest.mark.usefixtures("crds")

EVERY_SECOND = "* * * * * *"
YEARLY = "0 0 1 1 *"


def now() -> datetime:
    """UTC now, naive like the history's DATETIME columns."""
    return datetime.now(UTC).replace(tzinfo=None)


def with_trigger(manifest: dict[str, Any], value: str | None) -> dict[str, Any]:
    if value is not None:
        manifest["metadata"]["annotations"] = {"cadenza.dev/trigger": value}
    return manifest


def of_origin(scene: Scenario, name: str, origin: str) -> list[dict[str, Any]]:
    return [r for r in scene.runs(name) if r["origin"] == origin]


def let_ticks_pass(scene: Scenario, count: int) -> None:
    """Wait until the clock Task has fired ``count`` more runs."""
    seen = len(scene.runs("clock"))
    wait_for(lambda: len(scene.runs("clock")) >= seen + count, 20, f"{count} more clock ticks")


def observed(scene: Scenario, name: str) -> None:
    """Wait until the operator has seen the Task's current generation."""
    out = scene.plane.kubectl("get", "task", name, "-n", scene.namespace, "-o", "json").stdout
    generation = json.loads(out)["metadata"]["generation"]
    wait_for(
        lambda: scene.task_status(name).get("observedGeneration") == generation,
        20,
        f"{name} observedGeneration {generation}",
    )


def test_suspended_task_fires_only_manual_triggers_and_resumes_without_backfill(
    scene: Scenario,
) -> None:
    scene.add_pods("pool", 1)
    paused = {"suspend": True, "payload": {"v": 1}}
    scene.apply(
        executor("pool"),
        task("clock", EVERY_SECOND),
        task("paused", EVERY_SECOND, **paused),
    )
    wait_for(
        lambda: any(
            c["type"] == "Scheduled" and c["reason"] == "Suspended"
            for c in scene.task_status("paused").get("conditions", [])
        ),
        20,
        "paused to report Scheduled=False Suspended",
    )
    let_ticks_pass(scene, 3)
    assert scene.runs("paused") == []
    assert "nextScheduleTime" not in scene.task_status("paused")

    # A trigger value fires one run, even while suspended.
    scene.apply(with_trigger(task("paused", EVERY_SECOND, **paused), "a"))
    wait_for(lambda: len(scene.runs("paused")) == 1, 20, "the manual run of trigger a")
    (first,) = scene.runs("paused")
    assert first["origin"] == "manual" and first["trigger_key"] == "a"
    wait_for(
        lambda: (r := scene.runs("paused")) and r[0]["status"] == "succeeded",
        20,
        "the manual run to succeed",
    )

    # The same value again (with a spec change the operator must process) fires nothing.
    scene.apply(with_trigger(task("paused", EVERY_SECOND, suspend=True, payload={"v": 2}), "a"))
    observed(scene, "paused")
    let_ticks_pass(scene, 2)
    assert [r["trigger_key"] for r in scene.runs("paused")] == ["a"]

    # A new value fires one more.
    scene.apply(with_trigger(task("paused", EVERY_SECOND, suspend=True, payload={"v": 2}), "b"))
    wait_for(lambda: len(scene.runs("paused")) == 2, 20, "the manual run of trigger b")
    let_ticks_pass(scene, 2)
    runs = scene.runs("paused")
    assert [(r["origin"], r["trigger_key"]) for r in runs] == [("manual", "a"), ("manual", "b")]

    # Resuming starts the ticks from now on: nothing for the seconds spent suspended.
    resumed_at = now()
    scene.apply(with_trigger(task("paused", EVERY_SECOND, suspend=False, payload={"v": 2}), "b"))
    wait_for(lambda: len(of_origin(scene, "paused", "schedule")) >= 3, 20, "three scheduled runs")
    runs = scene.runs("paused")
    ticks = [r["scheduled_at"] for r in runs if r["origin"] == "schedule"]
    assert min(ticks) >= resumed_at - timedelta(seconds=1), (resumed_at, ticks)
    assert len(ticks) == len(set(ticks))
    assert [r for r in runs if r["origin"] not in ("schedule", "manual")] == []
    assert sum(1 for r in runs if r["origin"] == "manual") == 2
    # The pods ran each run once.
    keys = [e["executionId"] for e in scene.ledger()]
    assert len(keys) == len(set(keys))


def test_editing_the_schedule_never_fires_retroactively(scene: Scenario) -> None:
    scene.add_pods("pool", 1)
    scene.apply(executor("pool"), task("clock", EVERY_SECOND), task("edited", YEARLY))
    wait_for(
        lambda: scene.task_status("edited").get("nextScheduleTime", "").endswith("01-01T00:00:00Z"),
        20,
        "the yearly schedule to be planned",
    )
    let_ticks_pass(scene, 3)
    assert scene.runs("edited") == []

    edited_at = now()
    scene.apply(task("edited", EVERY_SECOND))
    wait_for(lambda: len(scene.runs("edited")) >= 3, 20, "three runs on the new schedule")
    runs = scene.runs("edited")
    assert {r["origin"] for r in runs} == {"schedule"}
    ticks = [r["scheduled_at"] for r in runs]
    assert min(ticks) >= edited_at - timedelta(seconds=1), (edited_at, ticks)
    assert ticks == sorted(set(ticks))

    # And back to a schedule that has not come round yet: nothing more fires.
    scene.apply(task("edited", YEARLY))
    observed(scene, "edited")
    settled = len(scene.runs("edited"))
    let_ticks_pass(scene, 3)
    # A tick already claimed when the edit arrived may still run; none after it.
    assert len(scene.runs("edited")) <= settled + 1


def test_the_status_drops_what_no_longer_applies(scene: Scenario) -> None:
    """Suspending a firing Task removes its next run from the status (it was left at a past
    time), and a last execution without a pod (a skipped run) shows none (it showed the pod of
    the run before): the status is a merge patch, so what no longer applies is sent as null."""
    scene.add_pods("pool", 1)
    busy = {"executionMode": "Skip", "handler": "sleep", "payload": {"seconds": 3}}
    scene.apply(executor("pool"), task("firing", EVERY_SECOND), task("busy", EVERY_SECOND, **busy))
    wait_for(
        lambda: (
            "pod" in (scene.task_status("firing").get("lastExecution") or {})
            and scene.task_status("firing").get("nextScheduleTime")
        ),
        20,
        "firing to run on a pod with a next run planned",
    )
    scene.apply(task("firing", EVERY_SECOND, suspend=True))
    observed(scene, "firing")
    wait_for(
        lambda: "nextScheduleTime" not in scene.task_status("firing"),
        20,
        "the next run of a suspended Task to leave its status",
    )

    def skipped_last() -> dict[str, Any] | None:
        last = scene.task_status("busy").get("lastExecution") or {}
        return last if last.get("phase") == "Skipped" else None

    last = wait_for(skipped_last, 30, "a skipped run as busy's last execution")
    assert "pod" not in last, last
    assert last["tick"]
    assert any(r["pod_name"] for r in scene.runs("busy")), "the runs before it had a pod"


def test_a_run_its_pod_holds_for_its_tick_is_cancelled_when_the_task_is_suspended(
    controlplane: ControlPlane, database: str, namespace: str, tmp_path: Path
) -> None:
    """Claimed and sent 6 s ahead of its tick (the pod's sidecar holds runs until their
    ``startAt``), the run is cancelled, on its pod too, when the Task is suspended before the
    tick: the application never runs it."""
    ahead = {"CADENZA_CLAIM_AHEAD_SECONDS": "6", "CADENZA_SEND_AHEAD_SECONDS": "6"}
    with scenario(controlplane, database, namespace, tmp_path, **ahead) as scene:
        scene.add_pods("pool", 1)
        every_20s = "*/20 * * * * *"
        scene.apply(executor("pool"), task("held", every_20s))

        def held() -> dict[str, Any] | None:
            soon = now() + timedelta(seconds=2)
            rows = scene.runs("held")
            return next(
                (r for r in rows if r["status"] == "running" and r["scheduled_at"] > soon), None
            )

        run = wait_for(held, 60, "a run its pod holds for a tick 2 s or more away")
        scene.apply(task("held", every_20s, suspend=True))
        wait_for(
            lambda: scene.runs("held")[-1]["status"] == "cancelled", 10, "the held run cancelled"
        )
        row = next(r for r in scene.runs("held") if r["id"] == run["id"])
        assert row["error"] == "the Task was suspended before the run started"
        assert row["finished_at"] < row["scheduled_at"]  # before its pod would have started it
        wait_for(lambda: now() > row["scheduled_at"] + timedelta(seconds=1), 30, "its tick")
        ran = {str(e["executionId"]) for e in scene.ledger()}
        assert not any(key.startswith(f"{run['id']}-") or key == str(run["id"]) for key in ran)
        assert [r["id"] for r in scene.runs("held")][-1] == run["id"]  # nothing after it
        # Its status counts it as cancelled, so the counters add up to the history.
        rows = scene.runs("held")

        def counted() -> int:
            counters = scene.task_status("held").get("counters") or {}
            return sum(counters.get(k, 0) for k in ("succeeded", "failed", "cancelled", "skipped"))

        wait_for(lambda: counted() == len(rows), 30, f"the counters to add up to {len(rows)} runs")
        assert scene.task_status("held")["counters"]["cancelled"] >= 1

"""Hostile objects stay with themselves: an every-second Task keeps firing beside the worst Tasks,
pods and Executors the schemas let through, across a kill -9 of the leader (issue 9, item 7).

No admission webhook here, as in a cluster where it is not installed: each object below passes
the CRDs' schemas. Before the fix, ``@every 9999999999999h`` made every leader's scheduler raise
in turn (each stepped down, and the next one met the same Task); a payload nested 31 levels deep
failed the mirror's transaction (MariaDB keeps JSON at most 32 levels deep), with the same crash
loop; one nested 5,000 levels deep broke kopf's parsing of the Tasks' watch; and a pod annotated
``cadenza.dev/weight: "²"`` was dropped by every replica's pod indexer, so a replica started
afterwards never became ready. The engine-side guards for values even the schema refuses are
unit tested by feeding specs directly (``tests/unit/test_hostile_values.py``).
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cadenza import cli
from cadenza.devenv.controlplane import ControlPlane
from tests.faults.test_failover_ticks import (
    SECOND,
    assert_each_tick_ran_once,
    beating,
    ledger_tick,
    now,
    settled,
)
from tests.support import wait_for
from tests.support.scenario import Scenario, executor, scenario, task

pytestmark = pytest.mark.usefixtures("crds")


@pytest.fixture(autouse=True)
def deep_json() -> Iterator[None]:
    """This process writes the 5,000-level payload as JSON too (the operator sets the same)."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(cli.RECURSION_LIMIT)
    yield
    sys.setrecursionlimit(before)


@pytest.fixture(autouse=True)
def hostile_tasks_deleted(controlplane: ControlPlane, namespace: str) -> Iterator[None]:
    """The Tasks stay in the session's API server (no namespace controller runs to delete
    them), and a cluster-wide list of Tasks in a later test would meet the 5,000-level payload
    without this module's recursion limit."""
    yield
    controlplane.kubectl("delete", "tasks", "--all", "-n", namespace, "--wait=false", check=False)


def nested(depth: int) -> Any:
    value: Any = {"leaf": 1}
    for _ in range(depth - 1):
        value = [value]
    return value


# Schema-valid, engine-hostile: each must end Ready=False with a Warning event, alone.
# (schedule, other spec fields, the field named, the reason)
REFUSED = {
    "forever": ("@every 9999999999999h", {}, "spec.schedule", "InvalidSchedule"),
    "never": ("0 0 31 2 *", {}, "spec.schedule", "InvalidSchedule"),
    "nowhere": ("* * * * * *", {"timeZone": "Mars/Olympus"}, "spec.timeZone", "InvalidSchedule"),
    # Deeper than the database's JSON: the mirror's transaction failed for every Task.
    "deepish": ("* * * * * *", {"payload": nested(31)}, "spec.payload", "InvalidSpec"),
    # Deeper than Python's default recursion limit: kopf could not parse the Tasks' watch.
    "deep": ("* * * * * *", {"payload": nested(5000)}, "spec.payload", "InvalidSpec"),
}
# Passes str.isdigit() but not int(); and more digits than int() converts.
GARBAGE_WEIGHTS = ("\u00b2", "9" * 5000)
ODD_HANDLER = ("h\u00fcnd\u2603ler\t\U0001f600 ;DROP TABLE tasks;-- " + "x" * 253)[:253]


def worst_valid_task() -> dict[str, Any]:
    """Every field at the edge of what the Task CRD accepts, and so of what the engine must
    compute with."""
    manifest = task("worst", "@every 8784h")
    manifest["spec"].update(
        executors=[{"name": "pool", "weight": 1000, "priority": 100}]
        + [{"name": f"absent-{i}", "weight": 0, "priority": 0} for i in range(31)],
        timeZone="Australia/Lord_Howe",
        executionMode="Parallel",
        maxConcurrent=1000,
        loadBalanceStrategy="Weighted",
        handler=ODD_HANDLER,
        payload={"deep": [[[[{"big": 1e308, "small": -(2**63), "odd": "\u0000\u202e"}]]]]},
        timeoutSeconds=86400,
        retry={"maxAttempts": 100, "backoffSeconds": 3600, "maxBackoffSeconds": 86400,
               "jitterPercent": 100},
        startingDeadlineSeconds=31622400,
        misfirePolicy="FireAll",
        maxMisfireRuns=100,
        history={"maxAgeSeconds": 315360000, "maxRuns": 1000000},
    )  # fmt: skip
    return manifest


def odd_executor() -> dict[str, Any]:
    """Valid but strange: the pool's own pods, probed on a port nobody listens on, through a
    token Secret that does not exist, with every number at its bound."""
    return executor(
        "odd",
        selector={"matchExpressions": [
            {"key": "cadenza.dev/executor", "operator": "In", "values": ["pool", "-_.x"]},
            {"key": "cadenza.dev/absent", "operator": "DoesNotExist"},
        ]},
        port=65535,
        scheme="https",
        healthCheck={"path": "/h?x=1&y=%20;@:!$", "periodSeconds": 3600, "timeoutSeconds": 60,
                     "failureThreshold": 100, "successThreshold": 100},
        maxConcurrencyPerPod=10000,
        tokenSecretRef={"name": "no-such-secret", "key": "a.b_c-d"},
    )  # fmt: skip


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def epoch(scene: Scenario) -> int:
    rows = scene.sql("SELECT epoch FROM leader_epochs")
    return int(rows[0]["epoch"]) if rows else 0


def assert_refused_alone(scene: Scenario) -> None:
    for name, (_, _, field, reason) in REFUSED.items():
        status = wait_for(
            lambda n=name: (
                (s := scene.task_status(n)) and condition(s, "Ready").get("status") == "False" and s
            ),
            30,
            f"{name} Ready=False",
        )
        ready = condition(status, "Ready")
        assert ready["reason"] == reason and ready["message"].startswith(field), ready
        assert "nextScheduleTime" not in status
        wait_for(
            lambda n=name: any(
                e["type"] == "Warning" and e["reason"] == REFUSED[n][3] for e in scene.events(n)
            ),
            30,
            f"a Warning event for {name}",
        )
        assert scene.runs(name) == []


def test_an_every_second_task_fires_beside_hostile_objects_across_a_leader_kill(
    controlplane: ControlPlane, database: str, namespace: str, tmp_path: Path
) -> None:
    with scenario(controlplane, database, namespace, tmp_path, replicas=2) as scene:
        pods = scene.add_pods("pool", 2)
        scene.apply(executor("pool"), beating("beat", misfirePolicy="FireOnce"))
        wait_for(
            lambda: sum(r["status"] == "succeeded" for r in scene.runs("beat")) >= 3,
            30,
            "three runs before the hostile objects",
        )
        leader, first_epoch = scene.leader(), epoch(scene)

        # The hostile objects: Tasks, pods' annotations, an Executor, a stray pod.
        scene.apply(
            *(task(n, s, **spec) for n, (s, spec, _, _) in REFUSED.items()),
            worst_valid_task(),
            odd_executor(),
        )
        for pod, weight in zip(pods, GARBAGE_WEIGHTS, strict=True):
            controlplane.kubectl(
                "annotate", "pod", pod.name, "-n", namespace, f"cadenza.dev/weight={weight}"
            )
        stray = {"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "stray", "annotations": {"cadenza.dev/weight": "NaN",
                                                               "cadenza.dev/trigger": "\u00b2"},
                              "labels": {"cadenza.dev/executor": "pool"}},
                 "spec": {"containers": [{"name": "c", "image": "none"}]}}  # fmt: skip
        scene.apply(stray)

        assert_refused_alone(scene)
        worst = wait_for(
            lambda: (
                (s := scene.task_status("worst"))
                and s.get("nextScheduleTime")
                and condition(s, "Ready")
                and s
            ),
            30,
            "the worst valid Task scheduled",
        )
        assert condition(worst, "Ready")["status"] == "True", worst
        # Nothing made the leader step down: same process, same epoch, still ticking.
        before = sum(r["status"] == "succeeded" for r in scene.runs("beat"))
        wait_for(
            lambda: sum(r["status"] == "succeeded" for r in scene.runs("beat")) >= before + 3,
            20,
            "three more runs beside the hostile objects",
        )
        assert scene.leader() is leader and epoch(scene) == first_epoch

        # Kill -9 the leader as it fires; the follower takes over the same hostile objects.
        claimed = len(scene.runs("beat"))
        wait_for(lambda: len(scene.runs("beat")) > claimed, 5, "the next tick's claim")
        leader.signal(signal.SIGKILL)
        killed_at, killed = now(), time.monotonic()
        new = scene.replicas.wait_for_leader(timeout=30)
        print(f"new leader {time.monotonic() - killed:.2f} s after the kill")
        # Its lock goes with its socket, which can be before the process is reaped.
        wait_for(lambda: not leader.alive(), 10, "the killed leader to exit")
        assert new is not leader and not leader.alive()
        # A replica started now, with every hostile object in place, becomes ready too.
        late = scene.replicas.add()
        scene.replicas.wait_indexed(timeout=60)
        for replica in (new, late):
            assert (replica.readyz() or {}).get("indexed") is True, replica.tail()

        after = wait_for(
            lambda: (
                rows := [
                    r for r in scene.runs("beat")
                    if r["origin"] == "schedule" and r["scheduled_at"] > killed_at
                    and r["status"] == "succeeded"
                ]
            ) and len(rows) >= 3 and rows,
            30,
            "three runs under the new leader",
        )  # fmt: skip
        last = max(r["scheduled_at"] for r in after)
        wait_for(lambda: settled(scene, "beat", last), 20, "every run up to then to finish")
        rows = [r for r in scene.runs("beat") if r["scheduled_at"] <= last]
        ticks = sorted(r["scheduled_at"] for r in rows)
        holes = sorted(
            {ticks[0] + i * SECOND for i in range(int((ticks[-1] - ticks[0]) / SECOND))}
            - set(ticks)
        )
        misfired = sorted(r["scheduled_at"] for r in rows if r["origin"] == "misfire")
        # FireOnce: of the ticks missed while nobody led, only the latest fires; no other hole.
        assert len(misfired) <= 1
        if holes:
            assert misfired, (holes, ticks)
            assert holes == [misfired[0] - (len(holes) - i) * SECOND for i in range(len(holes))]
        assert {r["status"] for r in rows} == {"succeeded"}, [
            (r["id"], r["status"], r["error"]) for r in rows if r["status"] != "succeeded"
        ]
        assert_each_tick_ran_once(scene, ["beat"])
        # The pods with garbage weights kept taking runs (at their Executor entry's weight).
        since = {e["pod"] for e in scene.ledger() if ledger_tick(e) > killed_at}
        assert since == {pod.name for pod in pods}

        # Under the new leader the hostile Tasks are still reported, and still never ran.
        assert_refused_alone(scene)
        assert scene.replicas.leaders() == [new]

"""Ticks across leader changes: none fires twice, none is lost outside the misfire policy.

Checked on the history (``UNIQUE(task_uid, scheduled_at)`` aside, every tick once) and on what
the executor pods really ran (each execution key once, each tick once).
"""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cadenza.devenv.controlplane import ControlPlane
from tests.support import wait_for
from tests.support.scenario import Scenario, executor, scenario, task

pytestmark = pytest.mark.usefixtures("crds")

EVERY_SECOND = "* * * * * *"
SECOND = timedelta(seconds=1)
OPEN = ("claimed", "queued", "dispatched", "running")
GAP_SECONDS = 5


def now() -> datetime:
    """UTC now, naive like the history's DATETIME columns."""
    return datetime.now(UTC).replace(tzinfo=None)


def ledger_tick(entry: dict[str, Any]) -> datetime:
    return datetime.strptime(entry["scheduledAt"], "%Y-%m-%dT%H:%M:%S.%fZ")


def beating(name: str, **spec: Any) -> dict[str, Any]:
    return task(name, EVERY_SECOND, startingDeadlineSeconds=30, timeoutSeconds=5, **spec)


def assert_each_tick_ran_once(scene: Scenario, names: list[str]) -> None:
    """History: no tick twice per Task. Pods: each execution key once, each run's tick once."""
    # History first: the Tasks keep ticking, and a run the history shows finished is already in
    # the ledger (the demo app writes it before it answers).
    history = {name: scene.runs(name) for name in names}
    entries = scene.ledger()
    keys = [e["executionId"] for e in entries]
    assert len(keys) == len(set(keys)), sorted(keys)
    by_key = {e["executionId"]: e for e in entries}
    for name in names:
        rows = history[name]
        ticks = [r["scheduled_at"] for r in rows]
        assert len(ticks) == len(set(ticks)), (name, ticks)
        ran = [by_key[f"{r['id']}-1"] for r in rows if f"{r['id']}-1" in by_key]
        # Each tick of this Task reached a pod once, as the tick its history row holds.
        assert sorted(ledger_tick(e) for e in ran) == sorted(
            r["scheduled_at"] for r in rows if f"{r['id']}-1" in by_key
        )
        for r in rows:
            if r["status"] == "succeeded":
                assert f"{r['id']}-1" in by_key, r
        # Never before its tick, whichever leader sent it.
        for e in ran:
            ran_at = datetime.fromisoformat(e["time"]).astimezone(UTC).replace(tzinfo=None)
            assert ran_at >= ledger_tick(e), e


def settled(scene: Scenario, name: str, before: datetime) -> bool:
    """Every run of ticks up to ``before`` is over."""
    return all(r["status"] not in OPEN for r in scene.runs(name) if r["scheduled_at"] <= before)


def test_kill_9_of_the_leader_while_it_fires_repeats_and_loses_no_tick(
    controlplane: ControlPlane, database: str, namespace: str, tmp_path: Path
) -> None:
    with scenario(controlplane, database, namespace, tmp_path, replicas=2) as scene:
        scene.add_pods("pool", 2)
        scene.apply(executor("pool"), beating("beat", misfirePolicy="FireOnce"))
        wait_for(
            lambda: sum(r["status"] == "succeeded" for r in scene.runs("beat")) >= 3,
            30,
            "three runs under the first leader",
        )
        old = scene.leader()
        # Kill it as it fires: the moment the next tick is claimed, before it is sent.
        claimed = len(scene.runs("beat"))
        wait_for(lambda: len(scene.runs("beat")) > claimed, 5, "the next tick's claim")
        old.signal(signal.SIGKILL)
        killed_at, killed = now(), time.monotonic()
        new = scene.replicas.wait_for_leader(timeout=30)
        takeover = time.monotonic() - killed
        # Its lock goes with its socket, which can be before the process is reaped.
        wait_for(lambda: not old.alive(), 10, "the killed leader to exit")
        assert new is not old and not old.alive()
        after = wait_for(
            lambda: (
                (
                    rows := [
                        r
                        for r in scene.runs("beat")
                        if r["origin"] == "schedule"
                        and r["scheduled_at"] > killed_at
                        and r["status"] == "succeeded"
                    ]
                )
                and len(rows) >= 3
                and rows
            ),
            30,
            "three runs under the new leader",
        )
        last = max(r["scheduled_at"] for r in after)
        wait_for(lambda: settled(scene, "beat", last), 20, "every run up to then to finish")

        rows = [r for r in scene.runs("beat") if r["scheduled_at"] <= last]
        ticks = sorted(r["scheduled_at"] for r in rows)
        holes = sorted(
            {ticks[0] + i * SECOND for i in range(int((ticks[-1] - ticks[0]) / SECOND))}
            - set(ticks)
        )
        misfired = sorted(r["scheduled_at"] for r in rows if r["origin"] == "misfire")
        first_sent = min(
            r["dispatched_at"] for r in rows if (r["dispatched_at"] or killed_at) > killed_at
        )
        print(
            f"kill -9: new leader {takeover:.2f} s after, first dispatch "
            f"{(first_sent - killed_at).total_seconds():.2f} s after; "
            f"{len(holes) + len(misfired)} ticks missed in the gap, fired {len(misfired)}"
        )
        # FireOnce: of the ticks missed while nobody led, only the latest fires.
        assert len(misfired) <= 1
        if holes:
            assert misfired, (holes, ticks)
            assert holes == [misfired[0] - (len(holes) - i) * SECOND for i in range(len(holes))]
        # No run was lost with the old leader: each ended well, where the history says.
        assert {r["status"] for r in rows} == {"succeeded"}, [
            (r["id"], r["status"], r["error"]) for r in rows if r["status"] != "succeeded"
        ]
        assert_each_tick_ran_once(scene, ["beat"])
        scheduled = [r["scheduled_at"] for r in scene.runs("beat")]
        assert len(scheduled) == len(set(scheduled))
        ledger = scene.ledger()
        assert len({e["scheduledAt"] for e in ledger}) == len(ledger)


def test_after_a_gap_with_no_leader_each_misfire_policy_fires_what_it_promises(
    controlplane: ControlPlane, database: str, namespace: str, tmp_path: Path
) -> None:
    policies = {
        "once": {"misfirePolicy": "FireOnce"},
        "all": {"misfirePolicy": "FireAll", "maxMisfireRuns": 3},
        "never": {"misfirePolicy": "Skip"},
    }
    with scenario(controlplane, database, namespace, tmp_path) as scene:
        scene.add_pods("pool", 2)
        scene.apply(executor("pool"), *(beating(n, **spec) for n, spec in policies.items()))
        wait_for(
            lambda: all(any(r["status"] == "succeeded" for r in scene.runs(n)) for n in policies),
            30,
            "a run of every Task",
        )
        stopping = time.monotonic()
        scene.replicas.stop_all()
        # Measured from when the last replica is gone: a stopping leader ticks until it exits.
        stopped, stopped_at = time.monotonic(), now()
        last = {n: max(r["scheduled_at"] for r in scene.runs(n)) for n in policies}
        # The gap itself is what is tested: nobody leads for GAP_SECONDS.
        wait_for(lambda: now() >= stopped_at + GAP_SECONDS * SECOND, GAP_SECONDS + 5, "the gap")
        starting = time.monotonic()
        scene.replicas.add()
        scene.replicas.wait_for_leader(timeout=30)
        led = time.monotonic()
        print(
            f"stop took {stopped - stopping:.1f} s, the new replica led {led - starting:.1f} s "
            f"after its start, no replica for {starting - stopped:.1f} s"
        )
        led -= stopped

        def first_scheduled(name: str) -> datetime | None:
            later = sorted(
                r["scheduled_at"]
                for r in scene.runs(name)
                if r["origin"] == "schedule" and r["scheduled_at"] > last[name]
            )
            return later[0] if later else None

        first = {
            n: wait_for(lambda n=n: first_scheduled(n), 30, f"{n} ticking again") for n in policies
        }
        for name in policies:
            wait_for(lambda n=name: settled(scene, n, first[n]), 20, f"{name}'s runs to finish")
        gap = {n: first[n] - last[n] - SECOND for n in policies}
        print(
            f"no leader for {led:.1f} s; ticks missed: "
            + ", ".join(f"{n} {gap[n] / SECOND:.0f}" for n in policies)
        )

        def in_gap(name: str) -> list[dict[str, Any]]:
            return [r for r in scene.runs(name) if last[name] < r["scheduled_at"] < first[name]]

        for name in policies:
            assert gap[name] >= GAP_SECONDS * SECOND
            assert all(r["origin"] == "misfire" for r in in_gap(name)), in_gap(name)
            assert all(r["status"] == "succeeded" for r in in_gap(name)), in_gap(name)
        # FireOnce: the latest missed tick, once.
        assert [r["scheduled_at"] for r in in_gap("once")] == [first["once"] - SECOND]
        # FireAll, capped at 3: the latest three missed ticks.
        assert [r["scheduled_at"] for r in in_gap("all")] == [
            first["all"] - k * SECOND for k in (3, 2, 1)
        ]
        # Skip: none.
        assert in_gap("never") == []
        expected = {"once": "fired 1,", "all": "fired 3,", "never": "fired 0,"}
        for name, fired in expected.items():
            event = wait_for(
                lambda n=name: next(
                    (e for e in scene.events(n) if e["reason"] == "Misfired"), None
                ),
                20,
                f"a Misfired event for {name}",
            )
            assert event["type"] == "Warning" and fired in event["message"], event
        assert_each_tick_ran_once(scene, list(policies))

"""Runs spread over real executor pods the way each load-balancing strategy promises.

Every test runs real operator replicas against the real API server and MariaDB, and real sidecars
(with the demo app) behind Pod objects. Spreads are read from the history rows (which pod each
run went to, in tick order) and cross-checked with what the demo apps really ran.
"""

from __future__ import annotations

import itertools
import math
import random
import signal
import socket
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cadenza.core import strategies
from cadenza.core.ids import PodName
from cadenza.devenv.controlplane import ControlPlane
from cadenza.devenv.pods import APP_PORT, SIDECAR_PORT, set_pod_status
from tests.support import scenario as scenario_module
from tests.support import wait_for
from tests.support.scenario import Scenario, executor, scenario, task

pytestmark = pytest.mark.usefixtures("crds")

EVERY_SECOND = "* * * * * *"
FINAL = {"succeeded", "failed", "timed_out", "cancelled", "skipped", "lost"}


# -- helpers ----------------------------------------------------------------------------------


def _free(ip: str) -> bool:
    for port in (SIDECAR_PORT, APP_PORT):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((ip, port))
            except OSError:
                return False
    return True


def private_addresses() -> Iterator[str]:
    """Loopback addresses in a /16 of 127/8 picked at random for this test, skipping any in use.

    The harness hands out 127.0.1.x from a counter that starts afresh in every pytest process,
    so two test sessions on one machine would put their sidecars on the same addresses.
    """
    block = f"127.{random.randrange(16, 250)}.{random.randrange(256)}"
    return (ip for ip in (f"{block}.{host}" for host in range(1, 255)) if _free(ip))


@pytest.fixture
def addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scenario_module, "_addresses", private_addresses())


@pytest.fixture
def scene(
    controlplane: ControlPlane, database: str, namespace: str, tmp_path: Path, addresses: None
) -> Iterator[Scenario]:
    with scenario(controlplane, database, namespace, tmp_path) as s:
        yield s


def wait_healthy(scene: Scenario, count: int) -> None:
    """Until the leader has probed ``count`` pods healthy (so the first run sees them all)."""

    def healthy() -> bool:
        rows = scene.sql(
            "SELECT pod_name FROM executor_instances WHERE namespace = %s AND healthy = 1",
            scene.namespace,
        )
        return len({r["pod_name"] for r in rows}) >= count

    wait_for(healthy, 30, f"{count} healthy pods")


Rows = list[dict[str, Any]]
"""History rows; empty while a condition waited on does not hold yet (falsy for wait_for)."""


def finished(scene: Scenario, name: str, count: int, after: int = 0) -> Rows:
    """The first ``count`` runs of the Task with an id above ``after``, once all are final."""
    runs = [r for r in scene.runs(name) if r["id"] > after][:count]
    if len(runs) < count or any(r["status"] not in FINAL for r in runs):
        return []
    return runs


def wait_finished(
    scene: Scenario, name: str, count: int, after: int = 0, timeout: float = 30
) -> Rows:
    return wait_for(lambda: finished(scene, name, count, after), timeout, f"{count} final runs")


def last_id(scene: Scenario, name: str) -> int:
    return max((r["id"] for r in scene.runs(name)), default=0)


def succeeded_on(runs: Sequence[dict[str, Any]]) -> list[str]:
    """The pod of every run, asserting each succeeded there as the demo app's ledger says."""
    for row in runs:
        assert row["status"] == "succeeded", row
    return [str(r["pod_name"]) for r in runs]


def ledger_agrees(scene: Scenario, runs: Sequence[dict[str, Any]]) -> None:
    ran = {e["executionId"]: e["pod"] for e in scene.ledger()}
    for row in runs:
        key = f"{row['id']}-{row['attempt']}"
        assert ran.get(key) == row["pod_name"], (key, ran.get(key), row["pod_name"])


def cycle_from(order: Sequence[str], first: str, length: int) -> list[str]:
    start = order.index(first)
    return [order[(start + i) % len(order)] for i in range(length)]


def with_executors(manifest: dict[str, Any], *entries: dict[str, Any]) -> dict[str, Any]:
    manifest["spec"]["executors"] = list(entries)
    return manifest


def after_switch(
    runs: Sequence[dict[str, Any]], target: set[str], slack: int = 2
) -> list[dict[str, Any]]:
    """The runs from the first one on ``target`` on; every one of them must be on ``target``
    and at most ``slack`` runs may precede the switch (the operator's watch latency)."""
    pods = succeeded_on(runs)
    first = next((i for i, pod in enumerate(pods) if pod in target), None)
    assert first is not None, f"no run reached {sorted(target)}: {pods}"
    assert first <= slack, f"runs kept going elsewhere after the change: {pods}"
    assert set(pods[first:]) <= target, f"runs left {sorted(target)} again: {pods}"
    return list(runs[first:])


def max_overlap(intervals: Sequence[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one moment ([start, end): one ending as another starts is not
    an overlap)."""
    edges = sorted(
        itertools.chain.from_iterable(((start, 1), (end, -1)) for start, end in intervals),
        key=lambda edge: (edge[0], edge[1]),
    )
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


# -- strategies -------------------------------------------------------------------------------


def test_round_robin_cycles_through_the_pods_in_a_fixed_order(scene: Scenario) -> None:
    scene.add_pods("pool", 3)
    scene.apply(executor("pool"))
    wait_healthy(scene, 3)
    scene.apply(task("rr", EVERY_SECOND, loadBalanceStrategy="RoundRobin"))

    runs = wait_finished(scene, "rr", 9)

    pods = succeeded_on(runs)
    assert pods == cycle_from(sorted(scene.pods), pods[0], len(pods))
    ledger_agrees(scene, runs)


def test_weighted_splits_three_to_one_smoothly(scene: Scenario) -> None:
    heavy = scene.add_pods("heavy", 1)[0].name
    light = scene.add_pods("light", 1)[0].name
    scene.apply(executor("heavy"), executor("light"))
    wait_healthy(scene, 2)
    scene.apply(
        with_executors(
            task("w", EVERY_SECOND, loadBalanceStrategy="Weighted"),
            {"name": "heavy", "weight": 3},
            {"name": "light", "weight": 1},
        )
    )

    runs = wait_finished(scene, "w", 16)

    pods = succeeded_on(runs)
    assert set(pods) == {heavy, light}
    assert pods.count(heavy) == 12 and pods.count(light) == 4, pods
    # Smooth: every four consecutive runs hold exactly one light run, never a burst.
    for i in range(len(pods) - 3):
        assert pods[i : i + 4].count(light) == 1, (i, pods)
    ledger_agrees(scene, runs)


def test_random_uses_every_pod(scene: Scenario) -> None:
    scene.add_pods("pool", 3)
    scene.apply(executor("pool"))
    wait_healthy(scene, 3)
    scene.apply(task("rnd", EVERY_SECOND, loadBalanceStrategy="Random"))

    def all_used() -> Rows:
        runs = [r for r in scene.runs("rnd") if r["status"] in FINAL]
        return runs if {r["pod_name"] for r in runs} == set(scene.pods) else []

    # Missing one of three pods in 25 uniform draws has a chance of 3 * (2/3)**25 < 1e-4.
    runs = wait_for(all_used, 30, "a run on every pod")
    succeeded_on(runs)
    ledger_agrees(scene, runs)


def test_sticky_stays_on_one_pod_and_moves_once_when_it_goes(scene: Scenario) -> None:
    scene.add_pods("pool", 3)
    scene.apply(executor("pool"))
    wait_healthy(scene, 3)
    scene.apply(task("st", EVERY_SECOND, loadBalanceStrategy="Sticky"))

    before = wait_finished(scene, "st", 4)
    usual = set(succeeded_on(before))
    assert len(usual) == 1, usual
    (home,) = usual
    uid = before[0]["task_uid"]

    def candidate(name: str) -> strategies.Candidate:
        return strategies.Candidate(PodName(name), "pool", 1, 0, 0)

    def best(names: set[str]) -> str:
        return max(names, key=lambda n: strategies.rendezvous_score(uid, candidate(n)))

    # The pod the Task hashes to, and where it goes when that pod leaves (its second choice).
    assert home == best(set(scene.pods))
    second = best(set(scene.pods) - {home})

    pod = scene.pods[home]
    pod.stop_processes()
    set_pod_status(scene.plane, scene.namespace, home, pod.ip, ready=False)
    mark = last_id(scene, "st")

    after = wait_finished(scene, "st", 5, after=mark)
    assert succeeded_on(after) == [second] * 5
    ledger_agrees(scene, before + after)


def test_least_loaded_never_piles_runs_on_one_pod(scene: Scenario) -> None:
    scene.add_pods("pool", 3)
    scene.apply(executor("pool"))
    wait_healthy(scene, 3)
    scene.apply(
        task(
            "ll",
            EVERY_SECOND,
            loadBalanceStrategy="LeastLoaded",
            handler="sleep",
            payload={"seconds": 2.5},
        )
    )

    runs = wait_finished(scene, "ll", 12, timeout=35)

    pods = succeeded_on(runs)
    assert set(pods) == set(scene.pods)
    spans = {r["id"]: (r["started_at"], r["finished_at"]) for r in runs}
    load = max_overlap(list(spans.values()))
    assert load >= 2, f"the runs did not overlap, the test proves nothing: {spans}"
    limit = math.ceil(load / 3) + 1
    for name in scene.pods:
        on_pod = [spans[r["id"]] for r in runs if r["pod_name"] == name]
        assert max_overlap(on_pod) <= limit, (name, load, pods)
    ledger_agrees(scene, runs)


def test_priority_tiers_fall_back_to_backup_and_return(scene: Scenario) -> None:
    primary = [p.name for p in scene.add_pods("primary", 2)]
    backup = [p.name for p in scene.add_pods("backup", 1)]
    scene.apply(executor("primary"), executor("backup"))
    wait_healthy(scene, 3)
    scene.apply(
        with_executors(
            task("tier", EVERY_SECOND),
            {"name": "primary", "priority": 0},
            {"name": "backup", "priority": 1},
        )
    )

    first = wait_finished(scene, "tier", 4)
    assert set(succeeded_on(first)) <= set(primary)

    for name in primary:
        set_pod_status(scene.plane, scene.namespace, name, scene.pods[name].ip, ready=False)
    mark = last_id(scene, "tier")
    down = wait_finished(scene, "tier", 5, after=mark)
    on_backup = after_switch(down, set(backup))
    assert len(on_backup) >= 3

    back = primary[0]
    set_pod_status(scene.plane, scene.namespace, back, scene.pods[back].ip, ready=True)
    mark = last_id(scene, "tier")
    returned = wait_finished(scene, "tier", 5, after=mark)
    on_primary = after_switch(returned, {back})
    assert len(on_primary) >= 3
    ledger_agrees(scene, first + down + returned)


# -- leader change ----------------------------------------------------------------------------


def test_round_robin_continues_its_cycle_after_the_leader_dies(
    controlplane: ControlPlane, database: str, namespace: str, tmp_path: Path, addresses: None
) -> None:
    with scenario(controlplane, database, namespace, tmp_path, replicas=2) as scene:
        scene.add_pods("pool", 3)
        scene.apply(executor("pool"))
        wait_healthy(scene, 3)
        scene.apply(task("rr", EVERY_SECOND, loadBalanceStrategy="RoundRobin"))
        order = sorted(scene.pods)
        old = scene.replicas.wait_for_leader()

        def dispatched() -> Rows:
            return [r for r in scene.runs("rr") if r["pod_name"]]

        # A Task without a cursor starts on a pod hashed from its uid: a leader that lost the
        # cursor would start there again. Kill the leader just after that pod accepted a run, so
        # that the next pod of the cycle is another one and a reset cannot pass for a resume.
        # (Accepted, not only recorded: a run recorded ahead of its send would be sent to the
        # same pod again by the new leader, and count as its first.)
        start = wait_finished(scene, "rr", 1)[0]["pod_name"]

        def just_sent_to_start() -> Rows:
            runs = dispatched()
            accepted = runs and runs[-1]["status"] in ("running", "succeeded")
            return runs if len(runs) >= 4 and runs[-1]["pod_name"] == start and accepted else []

        before = wait_for(just_sent_to_start, 30, f"a run accepted by {start}")
        old.signal(signal.SIGKILL)
        mark = last_id(scene, "rr")
        new = scene.replicas.wait_for_leader(exclude=old)
        assert new is not old

        def resumed() -> Rows:
            runs = dispatched()
            return runs if sum(1 for r in runs if r["id"] > mark) >= 5 else []

        runs = wait_for(resumed, 30, "five runs dispatched after the takeover")
        pods = [str(r["pod_name"]) for r in runs]
        state = scene.sql("SELECT strategy, state, epoch FROM load_balance_state")
        assert pods == cycle_from(order, start, len(pods)), (pods, state)
        old_epoch = max(r["epoch"] for r in before)
        last_old = [r for r in runs if r["epoch"] <= old_epoch][-1]
        first_new = next(r for r in runs if r["epoch"] > old_epoch)
        assert first_new["pod_name"] == cycle_from(order, last_old["pod_name"], 2)[1], state
        assert first_new["pod_name"] != start, f"the race this test avoids happened: {pods}"
        assert {r["epoch"] for r in runs if r["id"] > mark} == {first_new["epoch"]}, state
        # The new leader probed the pods before sending anything: no run (the one it took over,
        # the missed tick it fired at once) failed for want of a healthy pod.
        podless = [r for r in scene.runs("rr") if r["id"] < runs[-1]["id"] and not r["pod_name"]]
        assert podless == [], podless
        # Runs the dead leader had in flight reported to its address, which is gone: the new
        # leader asks their pods how they went, so none stays open and none is lost.
        taken_over = [r["id"] for r in before if r["id"] <= mark]

        def settled() -> Rows:
            rows = [r for r in scene.runs("rr") if r["id"] in taken_over]
            return rows if all(r["status"] == "succeeded" for r in rows) else []

        wait_for(settled, 30, "every run of the dead leader to end succeeded")

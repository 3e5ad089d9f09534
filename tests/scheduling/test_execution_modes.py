"""Execution modes decide what a tick does while earlier runs of its Task are still going.

Sequential queues behind the run in flight (one at a time across all pods, in tick order),
Skip records the tick as skipped, Parallel runs up to ``maxConcurrent`` at once and records the
rest as skipped. Overlap is judged on what the pods really did: the started/finished times the
sidecars reported for each run.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.support import wait_for
from tests.support.scenario import Scenario, executor, task

pytestmark = pytest.mark.usefixtures("crds")

IN_FLIGHT = ("claimed", "dispatched", "running")


def by_status(rows: list[dict[str, Any]], *statuses: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["status"] in statuses]


def most_at_once(rows: list[dict[str, Any]]) -> int:
    """The largest number of runs whose [started_at, finished_at) intervals overlap; a run
    still going counts until the end of time."""
    edges: list[tuple[datetime, int]] = []
    for r in rows:
        if r["started_at"] is None:
            continue
        edges.append((r["started_at"], 1))
        edges.append((r["finished_at"] or datetime.max, -1))
    # At equal times an end sorts before a start: touching intervals do not overlap.
    edges.sort()
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


def contiguous(ticks: list[datetime]) -> bool:
    ordered = sorted(ticks)
    return all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(ordered))


def assert_skipped_never_ran(scene: Scenario, rows: list[dict[str, Any]]) -> None:
    skipped = by_status(rows, "skipped")
    for r in skipped:
        assert r["origin"] == "schedule"
        assert r["pod_name"] is None and r["dispatched_at"] is None and r["started_at"] is None
        assert r["finished_at"] is not None
        assert scene.attempts(r["id"]) == []
    ran = {e["executionId"] for e in scene.ledger()}
    assert not {f"{r['id']}-1" for r in skipped} & ran


def test_sequential_runs_one_at_a_time_in_tick_order_and_shows_its_queue(
    scene: Scenario,
) -> None:
    scene.add_pods("pool", 3)
    scene.apply(
        executor("pool"),
        task(
            "seq",
            "* * * * * *",
            executionMode="Sequential",
            handler="sleep",
            payload={"seconds": 2.5},
        ),
    )
    seen = {"queued_rows": 0, "status_queued": 0, "in_flight": 0}

    def progressed() -> bool:
        rows = scene.runs("seq")
        seen["queued_rows"] = max(seen["queued_rows"], len(by_status(rows, "queued")))
        seen["in_flight"] = max(seen["in_flight"], len(by_status(rows, *IN_FLIGHT)))
        queued = int(scene.task_status("seq").get("queued") or 0)
        seen["status_queued"] = max(seen["status_queued"], queued)
        return len(by_status(rows, "succeeded")) >= 4 and seen["status_queued"] >= 1

    wait_for(progressed, 40, "four finished runs and a visible queue")
    rows = scene.runs("seq")
    assert seen["queued_rows"] >= 1, seen
    assert seen["in_flight"] == 1, seen
    # Every tick was kept: queued, never skipped.
    assert not by_status(rows, "skipped")
    assert contiguous([r["scheduled_at"] for r in rows])
    done = sorted(by_status(rows, "succeeded"), key=lambda r: r["started_at"])
    assert most_at_once(by_status(rows, "succeeded", *IN_FLIGHT)) == 1
    for earlier, later in itertools.pairwise(done):
        assert later["started_at"] >= earlier["finished_at"], (earlier, later)
        # Tick order: a later tick never overtakes an earlier one.
        assert later["scheduled_at"] > earlier["scheduled_at"]
    # The oldest ticks ran first; everything after the last one to start still waits.
    first_waiting = min(r["scheduled_at"] for r in by_status(rows, "queued", *IN_FLIGHT))
    assert all(r["scheduled_at"] < first_waiting for r in done)
    # One at a time across all pods, not per pod.
    assert len({r["pod_name"] for r in done}) >= 2
    keys = [e["executionId"] for e in scene.ledger()]
    assert len(keys) == len(set(keys))


def test_skip_records_the_ticks_that_find_a_run_going(scene: Scenario) -> None:
    scene.add_pods("pool", 2)
    scene.apply(
        executor("pool"),
        task("skipper", "* * * * * *", executionMode="Skip", handler="sleep",
             payload={"seconds": 2.5}),
    )  # fmt: skip

    def counted() -> dict[str, Any] | None:
        status = scene.task_status("skipper")
        rows = scene.runs("skipper")
        enough = len(by_status(rows, "succeeded")) >= 2 and len(by_status(rows, "skipped")) >= 3
        return status if enough and status.get("counters", {}).get("skipped", 0) >= 3 else None

    status = wait_for(counted, 40, "two runs, three skipped ticks, counted in the status")
    rows = scene.runs("skipper")
    assert not by_status(rows, "queued")
    assert contiguous([r["scheduled_at"] for r in rows])
    assert most_at_once(by_status(rows, "succeeded", *IN_FLIGHT)) == 1
    assert_skipped_never_ran(scene, rows)
    assert status["counters"]["skipped"] <= len(by_status(rows, "skipped"))


def test_parallel_runs_at_most_max_concurrent_and_skips_the_rest(scene: Scenario) -> None:
    scene.add_pods("pool", 2)
    scene.apply(
        executor("pool"),
        task("wide", "* * * * * *", executionMode="Parallel", maxConcurrent=2, handler="sleep",
             payload={"seconds": 3}),
    )  # fmt: skip

    def enough() -> list[dict[str, Any]] | None:
        rows = scene.runs("wide")
        done = len(by_status(rows, "succeeded")) >= 4 and len(by_status(rows, "skipped")) >= 3
        return rows if done else None

    rows = wait_for(enough, 40, "four runs and three skipped ticks")
    assert not by_status(rows, "queued", "failed", "lost")
    assert contiguous([r["scheduled_at"] for r in rows])
    # Two at once (the limit is reached), never three.
    assert most_at_once(by_status(rows, "succeeded", *IN_FLIGHT)) == 2
    assert_skipped_never_ran(scene, rows)
    status = wait_for(
        lambda: (s := scene.task_status("wide")).get("counters", {}).get("skipped", 0) >= 3 and s,
        10,
        "skipped ticks counted in the status",
    )
    assert status["counters"]["succeeded"] >= 1

"""History retention: a Task's finished runs beyond ``spec.history.maxRuns`` are pruned, oldest
first, together with their attempts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cadenza.devenv.controlplane import ControlPlane
from tests.support import wait_for
from tests.support.scenario import Scenario, executor, scenario, task

pytestmark = pytest.mark.usefixtures("crds")

MAX_RUNS = 5
INTERVAL = 2
# Between two retention rounds a one-second schedule adds this many finished runs at most.
BETWEEN_ROUNDS = INTERVAL + 1


@pytest.fixture
def scene(
    controlplane: ControlPlane, database: str, namespace: str, tmp_path: Path
) -> Iterator[Scenario]:
    tuning = {"CADENZA_RETENTION_INTERVAL_SECONDS": str(INTERVAL)}
    with scenario(controlplane, database, namespace, tmp_path, **tuning) as s:
        yield s


def finished(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["finished_at"] is not None]


def attempt_rows(scene: Scenario, ids: set[int]) -> list[dict[str, Any]]:
    if not ids:
        return []
    marks = ", ".join(["%s"] * len(ids))
    return scene.sql(f"SELECT * FROM execution_attempts WHERE execution_id IN ({marks})", *ids)


def test_history_keeps_the_newest_runs_and_prunes_older_ones_with_their_attempts(
    scene: Scenario,
) -> None:
    scene.add_pods("pool", 1)
    history = {"maxRuns": MAX_RUNS}
    scene.apply(executor("pool"), task("busy", "* * * * * *", history=history))
    seen: set[int] = set()
    samples = {"pruned": 0}

    def sample() -> bool:
        rows = scene.runs("busy")
        ids = [r["id"] for r in rows]
        seen.update(ids)
        if ids and min(ids) > min(seen):
            samples["pruned"] += 1
            # Oldest first: what is left is an unbroken run of the newest ids.
            assert ids == sorted(i for i in seen if i >= min(ids)), (ids, sorted(seen))
            assert len(finished(rows)) <= MAX_RUNS + BETWEEN_ROUNDS, rows
        return len(seen) >= 3 * MAX_RUNS and samples["pruned"] >= 5

    wait_for(sample, 40, "runs well beyond the limit, pruned along the way")

    # Stop the ticks; after the next rounds exactly the newest MAX_RUNS runs remain.
    scene.apply(task("busy", "* * * * * *", history=history, suspend=True))
    kept = wait_for(
        lambda: (
            (rows := scene.runs("busy"))
            and len(rows) == MAX_RUNS
            and len(finished(rows)) == MAX_RUNS
            and rows
        ),
        20,
        f"{MAX_RUNS} finished runs left",
    )
    seen.update(r["id"] for r in kept)
    kept_ids = {r["id"] for r in kept}
    assert sorted(kept_ids) == sorted(seen)[-MAX_RUNS:]
    pruned = seen - kept_ids
    assert pruned and max(pruned) < min(kept_ids)
    # The attempts went with their runs; the kept runs keep theirs.
    assert attempt_rows(scene, pruned) == []
    kept_attempts = attempt_rows(scene, kept_ids)
    assert {a["execution_id"] for a in kept_attempts} == {
        r["id"] for r in kept if r["status"] != "skipped"
    }

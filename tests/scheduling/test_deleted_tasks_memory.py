"""Memory per deleted Task returns: a leader that ran many Tasks every second keeps nothing of
them once they are deleted, neither their ``task`` metric series nor its bookkeeping (plans,
status entries, balancer state, read from ``cadenza_leader_tasks_tracked``), while a Task that
stays keeps running and keeps its series."""

from __future__ import annotations

import re
import urllib.request

import pytest

from tests.support import wait_for
from tests.support.scenario import Scenario, executor, task

pytestmark = pytest.mark.usefixtures("crds")

EVERY_SECOND = "* * * * * *"
CHURN = 100
LABEL = "cadenza.test/churn"
TASK_LABEL = re.compile(r'\{[^}]*\btask="([^"]+)"')
PARTS = ("plans", "status", "balance")


def scrape(scene: Scenario) -> str:
    with urllib.request.urlopen(f"{scene.leader().url}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def task_series(text: str) -> set[tuple[str, str]]:
    """Every series labelled with a Task, as (metric, task)."""
    found = set()
    for line in text.splitlines():
        if not line.startswith("#") and (m := TASK_LABEL.search(line)):
            found.add((line.split("{", 1)[0], m.group(1)))
    return found


def tasks_in(series: set[tuple[str, str]]) -> set[str]:
    return {task for _, task in series}


def tracked(text: str) -> dict[str, float]:
    values = {}
    for part in PARTS:
        prefix = f'cadenza_leader_tasks_tracked{{part="{part}"}} '
        line = next((ln for ln in text.splitlines() if ln.startswith(prefix)), None)
        values[part] = float(line.split()[-1]) if line else -1.0
    return values


def fired(scene: Scenario) -> set[str]:
    """Tasks with at least one succeeded run."""
    rows = scene.sql(
        "SELECT DISTINCT task_name FROM task_executions WHERE namespace = %s AND status = %s",
        scene.namespace,
        "succeeded",
    )
    return {r["task_name"] for r in rows}


def churned(i: int) -> dict[str, object]:
    body = task(f"churn-{i:03d}", EVERY_SECOND)
    body["metadata"] = {"name": f"churn-{i:03d}", "labels": {LABEL: "yes"}}
    return body


def test_deleted_tasks_leave_no_series_and_no_bookkeeping_on_the_leader(scene: Scenario) -> None:
    ns = scene.namespace
    scene.add_pods("pool", 3, max_concurrency=64)
    scene.apply(executor("pool"), task("kept", EVERY_SECOND))
    wait_for(
        lambda: "kept" in fired(scene) and tasks_in(task_series(scrape(scene))) == {f"{ns}/kept"},
        60,
        "the kept Task to run and have its status written",
    )
    before = task_series(scrape(scene))

    scene.apply(*(churned(i) for i in range(CHURN)))
    names = {f"churn-{i:03d}" for i in range(CHURN)}
    wanted = {f"{ns}/{name}" for name in names | {"kept"}}
    # Each of them has a plan, a status entry and (having fired) balancer state.
    wait_for(
        lambda: (
            names <= fired(scene)
            and tasks_in(task_series(text := scrape(scene))) == wanted
            and tracked(text) == {part: CHURN + 1.0 for part in PARTS}
        ),
        120,
        f"each of {CHURN} Tasks to run, have its status written and be tracked",
    )
    text = scrape(scene)
    print(f"{len(task_series(text))} task series with {CHURN + 1} Tasks, {len(before)} with one")
    for name in ("churn-000", f"churn-{CHURN - 1:03d}"):
        # Status writes are rate-limited: the first may predate the first run's end.
        wait_for(
            lambda name=name: scene.task_status(name).get("lastScheduleTime"),
            60,
            f"{name}'s status to show its last schedule time",
        )

    scene.plane.kubectl("delete", "tasks", "-n", ns, "-l", f"{LABEL}=yes", "--wait=false")
    wait_for(
        lambda: (
            task_series(text := scrape(scene)) == before
            and tracked(text) == {part: 1.0 for part in PARTS}
        ),
        60,
        "the deleted Tasks' series and bookkeeping to go",
    )

    # The Task that stayed kept running and kept its series.
    runs_before = len(scene.runs("kept"))
    wait_for(lambda: len(scene.runs("kept")) >= runs_before + 2, 30, "the kept Task to fire on")
    assert task_series(scrape(scene)) == before

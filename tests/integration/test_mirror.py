"""The MySQL mirror equals what the API server holds: after creates, updates and deletes of
Tasks, Executors and Pods, and after changes made while every replica was stopped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from cadenza.core import selectors
from cadenza.devenv.controlplane import ControlPlane
from cadenza.devenv.pods import pod_manifest, set_pod_status
from cadenza.store import mirror_reads
from tests.support import wait_for
from tests.support.operators import Replicas, replicas

pytestmark = pytest.mark.usefixtures("crds")

LABEL = {"cadenza.dev/executor": "pool"}


def executor(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "cadenza.dev/v1alpha1",
        "kind": "Executor",
        "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": labels}},
    }


def task(name: str, schedule: str, executors: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "cadenza.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": name},
        "spec": {"schedule": schedule, "executors": [{"name": e} for e in executors]},
    }


def apply(plane: ControlPlane, namespace: str, *objects: dict[str, Any]) -> None:
    plane.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}),
    )


def add_pod(
    plane: ControlPlane, namespace: str, name: str, ip: str, labels: dict[str, str]
) -> None:
    apply(plane, namespace, pod_manifest(name, namespace, labels))
    set_pod_status(plane, namespace, name, ip)


def api_view(plane: ControlPlane, namespace: str) -> dict[str, Any]:
    """What the mirror should hold, computed from the API server's objects."""

    def items(kind: str) -> list[dict[str, Any]]:
        out = plane.kubectl("get", kind, "-n", namespace, "-o", "json").stdout
        return list(json.loads(out)["items"])

    executors = {e["metadata"]["name"]: e for e in items("executors.cadenza.dev")}
    pods = items("pods")
    return {
        "tasks": sorted(
            (
                t["metadata"]["uid"],
                t["metadata"]["name"],
                t["spec"]["schedule"],
                tuple(
                    (
                        e["name"],
                        executors[e["name"]]["metadata"]["uid"] if e["name"] in executors else None,
                    )
                    for e in t["spec"]["executors"]
                ),
            )
            for t in items("tasks.cadenza.dev")
        ),
        "executors": sorted((e["metadata"]["uid"], name) for name, e in executors.items()),
        "instances": sorted(
            (e["metadata"]["uid"], p["metadata"]["name"], p["status"].get("podIP"))
            for e in executors.values()
            for p in pods
            if selectors.matches(e["spec"]["selector"], p["metadata"].get("labels") or {})
        ),
    }


def mirror_view(engine: Engine, namespace: str) -> dict[str, Any]:
    with engine.connect() as conn:
        links: dict[str, list[tuple[str, str | None]]] = {}
        for link in mirror_reads.read_task_executors(conn, namespace):
            links.setdefault(link.task_uid, []).append((link.executor_name, link.executor_uid))
        executors = mirror_reads.read_executors(conn, namespace)
        uids = {e.uid for e in executors}
        return {
            "tasks": sorted(
                (t.uid, t.name, t.cron_expression, tuple(links.get(t.uid, [])))
                for t in mirror_reads.read_tasks(conn, namespace)
            ),
            "executors": sorted((e.uid, e.name) for e in executors),
            "instances": sorted(
                (uid, pod.pod_name, pod.ip)
                for uid, pods in mirror_reads.read_instances(conn).items()
                if uid in uids
                for pod in pods
            ),
        }


def assert_mirrored(plane: ControlPlane, engine: Engine, namespace: str, what: str) -> None:
    last: dict[str, Any] = {}

    def equal() -> bool:
        last["api"], last["mirror"] = api_view(plane, namespace), mirror_view(engine, namespace)
        return bool(last["api"] == last["mirror"])

    try:
        wait_for(equal, 60, f"mirror equals the API {what}")
    except AssertionError:
        pytest.fail(f"{what}:\napi    = {last['api']}\nmirror = {last['mirror']}")


@pytest.fixture
def group(
    controlplane: ControlPlane, database: str, namespace: str, tmp_path: Path
) -> Iterator[Replicas]:
    with replicas(controlplane, database, namespace, tmp_path, count=2) as g:
        yield g


def test_the_mirror_follows_creates_updates_and_deletes(
    controlplane: ControlPlane, engine: Engine, group: Replicas, namespace: str
) -> None:
    group.wait_for_leader()
    apply(
        controlplane,
        namespace,
        executor("pool", LABEL),
        task("alpha", "*/10 * * * * *", ["pool"]),
        task("beta", "@hourly", ["pool", "ghost"]),
    )
    add_pod(controlplane, namespace, "p1", "127.0.0.51", LABEL)
    add_pod(controlplane, namespace, "p2", "127.0.0.52", LABEL)
    add_pod(controlplane, namespace, "other", "127.0.0.53", {"app": "unrelated"})
    assert_mirrored(controlplane, engine, namespace, "after creates")

    apply(controlplane, namespace, task("alpha", "0 9 * * 1-5", ["pool"]))
    controlplane.kubectl("label", "pod", "other", "-n", namespace, "cadenza.dev/executor=pool")
    controlplane.kubectl("delete", "pod", "p1", "-n", namespace, "--wait=false")
    controlplane.kubectl("delete", "task", "beta", "-n", namespace)
    assert_mirrored(controlplane, engine, namespace, "after updates and deletes")

    # A status-only change rewrites nothing.
    with engine.connect() as conn:
        before = {t.uid: t for t in mirror_reads.read_tasks(conn, namespace)}
        stamp = conn.exec_driver_sql(
            "SELECT updated_at FROM tasks WHERE name = 'alpha'"
        ).scalar_one()
    controlplane.kubectl(
        "patch",
        "task",
        "alpha",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"queued": 7}}),
    )
    apply(controlplane, namespace, executor("pool2", {"x": "y"}))  # an event that forces a sync
    assert_mirrored(controlplane, engine, namespace, "after a status-only change")
    with engine.connect() as conn:
        assert {t.uid: t for t in mirror_reads.read_tasks(conn, namespace)} == before
        assert (
            conn.exec_driver_sql("SELECT updated_at FROM tasks WHERE name = 'alpha'").scalar_one()
            == stamp
        )


def test_changes_made_while_no_replica_ran_are_reflected(
    controlplane: ControlPlane, engine: Engine, group: Replicas, namespace: str
) -> None:
    group.wait_for_leader()
    apply(
        controlplane,
        namespace,
        executor("pool", LABEL),
        task("alpha", "@daily", ["pool"]),
        task("beta", "@hourly", ["pool"]),
    )
    add_pod(controlplane, namespace, "p1", "127.0.0.61", LABEL)
    assert_mirrored(controlplane, engine, namespace, "before the outage")

    group.stop_all()
    apply(
        controlplane,
        namespace,
        task("gamma", "*/5 * * * *", ["pool"]),
        task("alpha", "@weekly", ["pool"]),
    )
    controlplane.kubectl("delete", "task", "beta", "-n", namespace)
    controlplane.kubectl("delete", "executor", "pool", "-n", namespace)
    apply(controlplane, namespace, executor("pool", LABEL))  # same name, new uid
    add_pod(controlplane, namespace, "p2", "127.0.0.62", LABEL)

    group.add("replica-late")
    group.wait_for_leader()
    assert_mirrored(controlplane, engine, namespace, "after the outage")


def test_a_task_naming_a_missing_executor_is_mirrored_with_a_condition(
    controlplane: ControlPlane, engine: Engine, group: Replicas, namespace: str
) -> None:
    group.wait_for_leader()
    apply(controlplane, namespace, task("orphan", "@hourly", ["nowhere"]))
    assert_mirrored(controlplane, engine, namespace, "with a missing executor")
    with engine.connect() as conn:
        (row,) = mirror_reads.read_tasks(conn, namespace)
        assert mirror_reads.read_missing_executors(conn, row.uid) == ["nowhere"]

    def condition() -> dict[str, Any] | None:
        out = controlplane.kubectl("get", "task", "orphan", "-n", namespace, "-o", "json").stdout
        conds = json.loads(out).get("status", {}).get("conditions", [])
        return next((c for c in conds if c["type"] == "ExecutorAvailable"), None)

    cond = wait_for(condition, 30, "the ExecutorAvailable condition")
    assert cond["status"] == "False" and cond["reason"] == "ExecutorNotFound"
    assert "spec.executors" in cond["message"] and "nowhere" in cond["message"]

    apply(controlplane, namespace, executor("nowhere", LABEL))
    wait_for(lambda: (c := condition()) and c["status"] == "True", 30, "the condition to clear")
    with engine.connect() as conn:
        assert mirror_reads.read_missing_executors(conn, row.uid) == []

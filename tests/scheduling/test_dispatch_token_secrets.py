"""Every Executor's dispatch token lives in a Secret the operator makes and owns; runs reach only
pods that mount it, and the Secret goes with its Executor.

Real operator replicas, a real API server and MariaDB, real sidecars that require the token.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support import wait_for
from tests.support.scenario import Scenario, executor, task

pytestmark = pytest.mark.usefixtures("crds")

EVERY_SECOND = "* * * * * *"


def secret(scene: Scenario, name: str) -> dict[str, Any] | None:
    found = scene.plane.kubectl(
        "get", "secret", name, "-n", scene.namespace, "-o", "json", "--ignore-not-found"
    ).stdout
    return json.loads(found) if found.strip() else None


def succeeded(scene: Scenario, name: str) -> list[dict[str, Any]]:
    return [r for r in scene.runs(name) if r["status"] == "succeeded"]


def test_the_operator_makes_an_executors_secret_and_runs_fire_on_pods_that_mount_it(
    scene: Scenario,
) -> None:
    pods = scene.add_pods("pool", 2)
    assert secret(scene, "pool-dispatch-token") is None  # nobody made it before the Executor
    assert all(p.processes == [] for p in pods), "pods wait for their Secret, as the kubelet does"

    scene.apply(executor("pool"), task("tick", EVERY_SECOND))

    made = secret(scene, "pool-dispatch-token")
    assert made is not None
    stored = json.loads(
        scene.plane.kubectl("get", "executor", "pool", "-n", scene.namespace, "-o", "json").stdout
    )
    (owner,) = made["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "Executor", "pool", stored["metadata"]["uid"],
    )  # fmt: skip
    assert owner["apiVersion"] == "cadenza.dev/v1alpha1" and owner["controller"] is True
    assert made["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "cadenza"
    assert {p.token for p in pods} == {pods[0].token} and pods[0].token

    runs = wait_for(lambda: len(succeeded(scene, "tick")) >= 3 and succeeded(scene, "tick"), 60,
                    "three runs on the pods that mount the Secret")  # fmt: skip
    assert {r["pod_name"] for r in runs} <= {p.name for p in pods}
    ran = {e["executionId"] for e in scene.ledger()}
    assert {f"{r['id']}-1" for r in runs} <= ran

    # The control plane runs no garbage collector: what deletes the Secret with its Executor is
    # the ownerReference above, which outlives the Executor here.
    scene.plane.kubectl("delete", "executor", "pool", "-n", scene.namespace)
    left = secret(scene, "pool-dispatch-token")
    assert left is None or left["metadata"]["ownerReferences"] == [owner]


def test_a_pod_with_another_executors_token_is_never_dispatched_to(scene: Scenario) -> None:
    """Pods that mount the ``pool`` Secret but are selected by ``other`` too: the operator sends
    ``other``'s own token, which they refuse, so no run of ``other`` lands there."""
    (pod,) = scene.add_pods("pool", 1)
    scene.apply(executor("pool"))
    assert pod.token is not None
    other = executor("other")
    other["spec"]["selector"] = {"matchLabels": {"cadenza.dev/executor": "pool"}}
    scene.apply(other, task("theirs", EVERY_SECOND, ["other"]))

    theirs = wait_for(lambda: secret(scene, "other-dispatch-token"), 30, "other's own Secret")
    ours = secret(scene, "pool-dispatch-token")
    assert ours is not None and theirs["data"]["token"] != ours["data"]["token"]
    wait_for(lambda: len(scene.runs("theirs")) >= 3, 30, "ticks of the other Executor's Task")
    assert all(r["status"] != "succeeded" for r in scene.runs("theirs"))
    assert scene.ledger() == [], "the pod ran nothing sent with somebody else's token"

"""Rotating an Executor's dispatch token: a ``cadenza.dev/rotate-token`` annotation makes the
operator write a new token into the Executor's Secret and keep the old one beside it; pods whose
kubelet has not delivered the new token yet keep running through the previous-token fallback,
and take the new one, without a restart, once their token file changes.

Real operator replica, real API server and MariaDB, real sidecars that require the token.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.api.conftest import Callers
from tests.support import wait_for
from tests.support.scenario import Scenario, executor, task

pytestmark = pytest.mark.usefixtures("crds")

EVERY_SECOND = "* * * * * *"
SECRET = "pool-dispatch-token"


def secret(scene: Scenario) -> dict[str, Any]:
    found = scene.plane.kubectl("get", "secret", SECRET, "-n", scene.namespace, "-o", "json")
    return dict(json.loads(found.stdout))


def value(made: dict[str, Any], key: str) -> str:
    return base64.b64decode(made["data"][key]).decode()


def sidecar_takes(base_url: str, token: str) -> bool:
    """Whether the sidecar's ``/v1/*`` accepts ``token`` (404 for an unknown run, else 401)."""
    request = urllib.request.Request(
        f"{base_url}/v1/executions/no-such-run", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        urllib.request.urlopen(request, timeout=5)
    except urllib.error.HTTPError as exc:
        assert exc.code in (401, 404), exc.code
        return exc.code == 404
    raise AssertionError("an unknown run answered 2xx")


def succeeded_since(scene: Scenario, since: datetime) -> list[dict[str, Any]]:
    return [
        r
        for r in scene.runs("tick")
        if r["status"] == "succeeded" and r["scheduled_at"].replace(tzinfo=UTC) > since
    ]


def test_a_rotation_keeps_the_old_token_beside_the_new_and_pods_keep_running(
    scene: Scenario,
) -> None:
    (pod,) = scene.add_pods("pool", 1)
    scene.apply(executor("pool"), task("tick", EVERY_SECOND))
    old = value(secret(scene), "token")
    assert pod.token == old
    wait_for(lambda: succeeded_since(scene, datetime.min.replace(tzinfo=UTC)), 60, "a first run")

    scene.plane.kubectl(
        "annotate", "executor", "pool", "-n", scene.namespace, "cadenza.dev/rotate-token=r1"
    )

    rotated = wait_for(
        lambda: (made := secret(scene)) and value(made, "token") != old and made,
        30,
        "the Secret to get a new token",
    )
    new = value(rotated, "token")
    assert value(rotated, "previous-token") == old
    rotated_at = datetime.fromisoformat(value(rotated, "rotated-at").replace("Z", "+00:00"))
    assert abs(datetime.now(UTC) - rotated_at) < timedelta(minutes=1)
    assert rotated["metadata"]["ownerReferences"][0]["name"] == "pool"

    # The pod still holds the old token (no kubelet has rewritten its file): the leader sends
    # the new one, is refused, and succeeds with the previous one.
    assert not sidecar_takes(pod.sidecar_url, new) and sidecar_takes(pod.sidecar_url, old)
    after = rotated_at + timedelta(seconds=2)
    wait_for(lambda: len(succeeded_since(scene, after)) >= 3, 60, "runs after the rotation")

    # The same value again rotates nothing; the kubelet's update reaches the running sidecar.
    scene.plane.kubectl(
        "annotate", "--overwrite", "executor", "pool", "-n", scene.namespace,
        "cadenza.dev/rotate-token=r1", "unrelated=change",
    )  # fmt: skip
    (pod.workdir / f"{pod.name}.token").write_text(new)
    wait_for(lambda: sidecar_takes(pod.sidecar_url, new), 30, "the sidecar to take the new token")
    assert value(secret(scene), "token") == new
    since = datetime.now(UTC)
    wait_for(lambda: len(succeeded_since(scene, since)) >= 2, 60, "runs with the new token")


def test_a_cancel_right_after_a_rotation_reaches_a_pod_still_on_the_old_token(
    scene: Scenario,
) -> None:
    """The REST API's cancel tells the pod with the same fallback as the leader's dispatch: a
    pod whose kubelet has not delivered the new token yet is told with the previous one."""
    (pod,) = scene.add_pods("pool", 1)
    slow = task("slow", "0 0 1 1 *", handler="sleep", payload={"seconds": 120}, suspend=True)
    scene.apply(executor("pool"), slow)
    old = value(secret(scene), "token")
    scene.plane.kubectl(
        "annotate", "executor", "pool", "-n", scene.namespace, "cadenza.dev/rotate-token=r1"
    )
    new = wait_for(
        lambda: (made := value(secret(scene), "token")) != old and made, 30, "a new token"
    )
    assert not sidecar_takes(pod.sidecar_url, new) and sidecar_takes(pod.sidecar_url, old)

    slow["metadata"]["annotations"] = {"cadenza.dev/trigger": "c1"}
    scene.apply(slow)
    running = wait_for(
        lambda: [r for r in scene.runs("slow") if r["status"] == "running"],
        60,
        "the triggered run to run on the pod (with the previous token)",
    )
    caller = Callers(scene.plane, scene.namespace).token("canceller", ("get", "cancel"))
    request = urllib.request.Request(
        f"{scene.replicas.members[0].url}/api/v1/executions/{running[0]['id']}/cancel",
        method="POST",
        headers={"Authorization": f"Bearer {caller}"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        body = json.load(answer)
    assert (body["status"], body["previousStatus"], body["podNotified"]) == (
        "cancelled",
        "running",
        True,
    ), body

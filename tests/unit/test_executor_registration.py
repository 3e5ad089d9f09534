"""What registration, status and deregistration do to an Executor object (pure), and how an
endpoint becomes a member of its pool."""

from __future__ import annotations

from typing import Any

from cadenza.api import registration
from cadenza.api.executor_models import RegisterBody
from cadenza.executors import endpoints
from cadenza.executors.members import selected
from cadenza.kube.views import ExecutorView

BODY = RegisterBody.model_validate(
    {"name": "sample-executor", "instance_id": "executor-001", "base_url": "http://h:9090"}
)


def executor(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "e", "namespace": "n", "uid": "u"}, "spec": spec}


def test_a_first_registration_names_its_own_token_secret_and_requires_heartbeats() -> None:
    made = registration.new_executor(BODY, "n", "sample-executor")
    assert made["spec"]["endpoints"] == [
        {"instanceId": "executor-001", "baseUrl": "http://h:9090", "state": "Online"}
    ]
    assert made["spec"]["heartbeatSeconds"] == registration.DEFAULT_HEARTBEAT_SECONDS
    assert made["spec"]["tokenSecretRef"]["name"] == "sample-executor-dispatch-token"
    assert len(registration.token_secret_name("x" * 253)) <= 253


def test_registering_again_replaces_the_entry_and_brings_it_back_online() -> None:
    old = executor(endpoints=[{"instanceId": "executor-001", "baseUrl": "http://old:1",
                               "state": "Draining"}, {"instanceId": "other", "baseUrl": "http://o:1"}],
                   heartbeatSeconds=30)  # fmt: skip
    new = registration.with_endpoint(old, BODY)
    assert [e["instanceId"] for e in new["spec"]["endpoints"]] == ["other", "executor-001"]
    assert new["spec"]["endpoints"][1]["state"] == "Online"
    assert new["spec"]["heartbeatSeconds"] == 30  # kept: the body names none


def test_state_and_deregistration() -> None:
    one = executor(endpoints=[{"instanceId": "a", "baseUrl": "http://a:1"}])
    assert registration.with_state(one, "b", "Draining") is None
    drained = registration.with_state(one, "a", "Draining")
    assert drained is not None and drained["spec"]["endpoints"][0]["state"] == "Draining"
    left, empty = registration.without_endpoint(one, "a")
    assert empty and "endpoints" not in left["spec"]
    pooled = executor(selector={"matchLabels": {"x": "y"}}, endpoints=[{"instanceId": "a",
                      "baseUrl": "http://a:1"}])  # fmt: skip
    assert registration.without_endpoint(pooled, "a")[1] is False


def test_a_task_is_joined_once() -> None:
    task = {"spec": {"executors": [{"name": "default"}]}}
    joined = registration.serving(task, "e")
    assert joined is not None and [e["name"] for e in joined["spec"]["executors"]] == [
        "default",
        "e",
    ]
    assert registration.serving(joined, "e") is None


def test_endpoints_are_members_named_by_instance_id_with_stable_uids() -> None:
    spec = {
        "endpoints": [
            {"instanceId": "a", "baseUrl": "http://10.0.0.9:9090/x"},
            {"instanceId": "b", "baseUrl": "http://h:1", "state": "Draining"},
            {"instanceId": "c", "baseUrl": "http://h:1", "state": "Offline"},
        ]
    }
    view = ExecutorView.from_body({"metadata": {"uid": "u", "namespace": "n", "name": "e"},
                                   "spec": spec})  # fmt: skip
    a, b, c = selected(view, [])
    assert (a.name, a.ip, a.candidate) == ("a", "10.0.0.9", True)
    assert a.uid == endpoints.member_uid("u", "a") != endpoints.member_uid("v", "a")
    assert len(a.uid) == 36
    assert (b.phase, b.ready, b.candidate) == ("Running", False, False)  # probed, no runs
    assert c.phase != "Running"  # not probed either
    assert endpoints.read_all(spec["endpoints"])[0].probe_url("/healthz") == (
        "http://10.0.0.9:9090/x/healthz"
    )

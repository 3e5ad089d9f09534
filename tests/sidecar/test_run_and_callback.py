"""A dispatched run is accepted with 202, runs the handler and reports its result by callback."""

from __future__ import annotations

import re

RFC3339_MS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def test_accepted_run_reports_its_result_by_callback(http_sidecar, demo_app, receiver):
    body = receiver.dispatch_body("echo", {"greeting": "hello", "n": [1, 2]}, attempt=2)

    reply = await http_sidecar.post(body)

    assert reply.status == 202
    assert reply.body == {
        "executionId": body["executionId"],
        "state": "running",
        "pod": f"pod-{http_sidecar.host}",
    }
    callback = await receiver.wait_acknowledged(body["executionId"])
    assert callback["status"] == "succeeded"
    assert callback["result"] == {"greeting": "hello", "n": [1, 2]}
    assert callback["error"] is None
    assert callback["exitCode"] is None
    assert callback["attempt"] == 2
    assert callback["pod"] == f"pod-{http_sidecar.host}"
    assert RFC3339_MS_UTC.match(callback["startedAt"])
    assert RFC3339_MS_UTC.match(callback["finishedAt"])
    assert callback["startedAt"] <= callback["finishedAt"]
    assert set(callback) == {
        "executionId", "status", "attempt", "pod", "startedAt", "finishedAt",
        "result", "error", "exitCode",
    }  # fmt: skip
    (call,) = receiver.attempts(body["executionId"])
    assert call.authorization == f"Bearer {body['callbackToken']}"
    (ran,) = demo_app.ledger(body["executionId"])
    assert ran["handler"] == "echo"
    assert ran["attempt"] == 2


async def test_run_view_follows_the_run_until_it_finished(http_sidecar, receiver, wait_until):
    body = receiver.dispatch_body("sleep", {"seconds": 0.5})
    assert (await http_sidecar.post(body)).status == 202

    running = await http_sidecar.get(body["executionId"])
    assert running.status == 200
    assert running.body["state"] == "running"
    assert running.body["finishedAt"] is None
    assert running.body["result"] is None

    finished = await http_sidecar.wait_state(body["executionId"], "succeeded")
    assert finished["result"] == {"slept": 0.5}
    assert finished["startedAt"] == running.body["startedAt"]
    assert RFC3339_MS_UTC.match(finished["finishedAt"])
    assert set(finished) >= {
        "executionId", "state", "attempt", "startedAt", "finishedAt", "result", "error",
        "exitCode",
    }  # fmt: skip
    await receiver.wait_acknowledged(body["executionId"])
    # The file goes once the sidecar has read the acknowledgement, a moment after we sent it.
    await wait_until(lambda: http_sidecar.spooled() == [], what="the spool to empty")


async def test_failing_handler_reports_failed_with_status_and_body(http_sidecar, receiver):
    body = receiver.dispatch_body("fail")
    assert (await http_sidecar.post(body)).status == 202

    callback = await receiver.wait_acknowledged(body["executionId"])

    assert callback["status"] == "failed"
    assert callback["result"] is None
    assert "HTTP 500" in callback["error"]
    assert "always fails" in callback["error"]


async def test_unknown_handler_in_the_app_reports_failed(http_sidecar, receiver):
    body = receiver.dispatch_body("no-such-handler")
    assert (await http_sidecar.post(body)).status == 202

    callback = await receiver.wait_acknowledged(body["executionId"])

    assert callback["status"] == "failed"
    assert "HTTP 404" in callback["error"]
    assert "no-such-handler" in callback["error"]


async def test_unreachable_app_reports_failed(start_sidecar, receiver, unused_address):
    sidecar = start_sidecar(handler_url=f"http://{unused_address}/run")
    body = receiver.dispatch_body("echo")
    assert (await sidecar.post(body)).status == 202

    callback = await receiver.wait_acknowledged(body["executionId"])

    assert callback["status"] == "failed"
    assert "handler call to" in callback["error"]


async def test_unknown_execution_is_404(http_sidecar):
    assert (await http_sidecar.get("never-dispatched")).status == 404
    assert (await http_sidecar.delete("never-dispatched")).status == 404


async def test_healthz_reports_load_without_auth(http_sidecar, receiver):
    body = receiver.dispatch_body("sleep", {"seconds": 1})
    assert (await http_sidecar.post(body)).status == 202

    health = await http_sidecar.healthz()

    assert health.status == 200
    assert health.body["status"] == "ok"
    assert health.body["inFlight"] == 1
    assert health.body["capacity"] == 4
    assert health.body["draining"] is False
    assert health.body["pod"] == f"pod-{http_sidecar.host}"

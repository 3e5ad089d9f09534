"""Callbacks are retried until acknowledged; 403/404/409/410 stop the retries for good."""

from __future__ import annotations

import pytest


async def test_result_arrives_once_the_receiver_stops_failing(http_sidecar, receiver, wait_until):
    receiver.answer = 500
    body = receiver.dispatch_body("echo", {"v": 1})
    assert (await http_sidecar.post(body)).status == 202
    await wait_until(
        lambda: len(receiver.attempts(body["executionId"])) >= 3, what="three failed attempts"
    )
    assert http_sidecar.spooled() != []

    receiver.answer = 200
    callback = await receiver.wait_acknowledged(body["executionId"])

    assert callback["status"] == "succeeded"
    assert callback["result"] == {"v": 1}
    attempts = receiver.attempts(body["executionId"])
    assert [a.answered for a in attempts][-1] == 200
    assert all(a.body == callback for a in attempts)  # every retry carries the same result
    await wait_until(lambda: http_sidecar.spooled() == [], what="the spool to empty")


@pytest.mark.parametrize("status", [429, 502, 503, 401])
async def test_transient_statuses_are_retried(http_sidecar, receiver, wait_until, status):
    receiver.answer = status
    body = receiver.dispatch_body("echo")
    assert (await http_sidecar.post(body)).status == 202
    await wait_until(lambda: len(receiver.attempts(body["executionId"])) >= 2, what="a retry")

    receiver.answer = 204
    await receiver.wait_acknowledged(body["executionId"])


async def test_result_arrives_after_the_receiver_comes_back(http_sidecar, receiver, wait_until):
    await receiver.stop()  # connection refused from now on
    body = receiver.dispatch_body("echo", {"v": 2})
    assert (await http_sidecar.post(body)).status == 202
    await http_sidecar.wait_state(body["executionId"], "succeeded")
    await wait_until(
        lambda: "callback failed; will retry" in http_sidecar.log(), what="a failed attempt"
    )

    await receiver.start()
    callback = await receiver.wait_acknowledged(body["executionId"])

    assert callback["result"] == {"v": 2}
    await wait_until(lambda: http_sidecar.spooled() == [], what="the spool to empty")


@pytest.mark.parametrize("status", [403, 404, 409, 410])
async def test_permanent_refusal_stops_retries(http_sidecar, receiver, wait_until, status):
    receiver.answer = status
    body = receiver.dispatch_body("echo")
    assert (await http_sidecar.post(body)).status == 202

    await wait_until(lambda: receiver.attempts(body["executionId"]), what="the callback")
    # The delivery is over (not waiting for a retry) and its spool file is gone.
    await wait_until(
        lambda: http_sidecar.spooled() == [], what="the refused result to leave the spool"
    )

    async def no_delivery_pending() -> bool:
        return (await http_sidecar.healthz()).body["pendingCallbacks"] == 0

    await wait_until(no_delivery_pending, what="no pending callback")
    assert len(receiver.attempts(body["executionId"])) == 1
    assert http_sidecar.log().count("callback refused for good") == 1
    # The run itself is still known and answers as finished.
    assert (await http_sidecar.get(body["executionId"])).body["state"] == "succeeded"

"""Batched callbacks: reports sharing a ``callbackBatchUrl`` travel together, each item is
acknowledged (or retried) on its own, the spool keeps what is undelivered across restarts, and a
receiver without batches gets single callbacks."""

from __future__ import annotations

import asyncio
import signal

import pytest

SINGLE_BODY_KEYS = {
    "executionId", "status", "attempt", "pod", "startedAt", "finishedAt", "result", "error",
    "exitCode",
}  # fmt: skip


# The receiver holds a batch while the test prepares the next: no timeout may cut in meanwhile,
# and the pod takes all the runs at once.
HOLDING = ("--callback-timeout-seconds", "30", "--max-concurrency", "8")


async def test_reports_arriving_during_a_batch_form_the_next_one(
    receiver, demo_app, start_sidecar, wait_until
):
    http_sidecar = start_sidecar(handler_url=demo_app.handler_url, extra_args=HOLDING)
    receiver.hold_batches = asyncio.Event()
    first = receiver.dispatch_body("echo", {"i": 0}, batched=True, callbackToken="token-0")
    assert (await http_sidecar.post(first)).status == 202
    # No linger: the lone report is posted at once, and the receiver holds that request.
    await wait_until(lambda: receiver.batches == [[first["executionId"]]], what="the 1st batch")
    later = [
        receiver.dispatch_body("echo", {"i": i}, batched=True, callbackToken=f"token-{i}")
        for i in range(1, 5)
    ]
    alone = receiver.dispatch_body("echo", {"alone": True})  # no callbackBatchUrl
    reply = await http_sidecar.post_batch([*later, alone])
    assert [r["result"] for r in reply.body["results"]] == ["accepted"] * 5
    for body in later:
        await http_sidecar.wait_state(body["executionId"], "succeeded")

    receiver.hold_batches.set()

    for i, body in enumerate([first, *later]):
        callback = await receiver.wait_acknowledged(body["executionId"])
        assert callback["result"] == {"i": i} and set(callback) == SINGLE_BODY_KEYS
        (call,) = receiver.attempts(body["executionId"])
        assert (call.via, call.authorization) == ("batch", f"Bearer token-{i}")
        assert call.callback_url == receiver.url
    assert len(receiver.batches) == 2
    assert sorted(receiver.batches[1]) == sorted(b["executionId"] for b in later)
    (single,) = receiver.attempts(alone["executionId"])
    assert single.via == "single" and single.answered == 200
    await wait_until(lambda: http_sidecar.spooled() == [], what="the spool to empty")


async def test_a_batch_carries_at_most_the_configured_items(
    receiver, demo_app, start_sidecar, wait_until
):
    sidecar = start_sidecar(
        handler_url=demo_app.handler_url, extra_args=("--callback-batch-max-items", "2", *HOLDING)
    )
    receiver.hold_batches = asyncio.Event()
    first = receiver.dispatch_body("echo", batched=True)
    assert (await sidecar.post(first)).status == 202
    await wait_until(lambda: receiver.batches, what="the first batch")
    later = [receiver.dispatch_body("echo", {"i": i}, batched=True) for i in range(5)]
    assert (await sidecar.post_batch(later)).status == 200
    for body in later:
        await sidecar.wait_state(body["executionId"], "succeeded")

    receiver.hold_batches.set()

    for body in later:
        await receiver.wait_acknowledged(body["executionId"])
    assert [len(batch) for batch in receiver.batches] == [1, 2, 2, 1]
    assert sorted(receiver.batched_ids()) == sorted(b["executionId"] for b in [first, *later])


async def test_only_the_items_not_acknowledged_are_sent_again(http_sidecar, receiver, wait_until):
    bodies = [receiver.dispatch_body("echo", {"i": i}, batched=True) for i in range(4)]
    ok_1, ok_2, flaky, stale = (b["executionId"] for b in bodies)
    answers = {flaky: 500, stale: 409}
    receiver.item_answer = lambda item: answers.get(item["executionId"], 200)

    assert (await http_sidecar.post_batch(bodies)).status == 200
    await wait_until(lambda: len(receiver.attempts(flaky)) >= 3, what="the flaky item's retries")
    del answers[flaky]
    await receiver.wait_acknowledged(flaky)

    sent = receiver.batched_ids()
    assert (sent.count(ok_1), sent.count(ok_2), sent.count(stale)) == (1, 1, 1)
    assert sent.count(flaky) >= 3
    assert [c.answered for c in receiver.attempts(flaky)][-1] == 200
    # Once the others were settled, every batch carried the flaky report alone.
    last_other = max(i for i, batch in enumerate(receiver.batches) if set(batch) - {flaky})
    assert all(batch == [flaky] for batch in receiver.batches[last_other + 1 :])
    assert receiver.acknowledged(stale) == []
    await wait_until(lambda: http_sidecar.spooled() == [], what="the spool to empty")
    assert http_sidecar.log().count("callback refused for good") == 1
    assert all(c.via == "batch" for c in receiver.calls)


@pytest.mark.parametrize("stop", ["kill -9", "SIGTERM"])
async def test_a_restart_sends_what_was_undelivered_and_nothing_acknowledged(
    http_sidecar, receiver, wait_until, stop
):
    bodies = [receiver.dispatch_body("echo", {"i": i}, batched=True) for i in range(4)]
    delivered = {bodies[0]["executionId"], bodies[2]["executionId"]}
    undelivered = {bodies[1]["executionId"], bodies[3]["executionId"]}
    receiver.item_answer = lambda item: 200 if item["executionId"] in delivered else 500
    assert (await http_sidecar.post_batch(bodies)).status == 200
    for execution_id in delivered:
        await receiver.wait_acknowledged(execution_id)
    await wait_until(
        lambda: all(len(receiver.attempts(e)) >= 2 for e in undelivered), what="retries"
    )
    await wait_until(lambda: len(http_sidecar.spooled()) == 2, what="the acknowledged to go")

    if stop == "kill -9":
        http_sidecar.kill_group()
    else:
        http_sidecar.send(signal.SIGTERM)
        assert await http_sidecar.wait_exit() == 0
    assert len(http_sidecar.spooled()) == 2
    receiver.item_answer = None  # everything is acknowledged from now on
    await http_sidecar.restart()

    for execution_id in undelivered:
        callback = await receiver.wait_acknowledged(execution_id)
        assert callback["status"] == "succeeded"
        assert receiver.attempts(execution_id)[-1].via == "batch"  # the spool kept the batch URL
    await wait_until(lambda: http_sidecar.spooled() == [], what="the spool to empty")
    sent = receiver.batched_ids()
    assert all(sent.count(execution_id) == 1 for execution_id in delivered)
    # The restarted sidecar knows the runs it found in the spool: none of them runs again.
    for body in (b for b in bodies if b["executionId"] in undelivered):
        again = await http_sidecar.post(body)
        assert (again.status, again.body["state"]) == (200, "succeeded")


@pytest.mark.parametrize("status", [404, 405, 413])
async def test_a_receiver_without_batches_gets_single_callbacks(
    http_sidecar, receiver, wait_until, status
):
    receiver.batch_answer = status
    bodies = [
        receiver.dispatch_body("echo", {"i": i}, batched=True, callbackToken=f"token-{i}")
        for i in range(3)
    ]

    assert (await http_sidecar.post_batch(bodies)).status == 200

    for i, body in enumerate(bodies):
        callback = await receiver.wait_acknowledged(body["executionId"])
        assert callback["result"] == {"i": i}
        attempts = receiver.attempts(body["executionId"])
        assert [(a.via, a.answered) for a in attempts] == [("batch", status), ("single", 200)]
        assert attempts[-1].authorization == f"Bearer token-{i}"
    await wait_until(lambda: http_sidecar.spooled() == [], what="the spool to empty")
    assert "sending these reports one by one" in http_sidecar.log()


async def test_a_failed_batch_is_retried_as_a_batch(http_sidecar, receiver, wait_until):
    receiver.batch_answer = 503
    bodies = [receiver.dispatch_body("echo", {"i": i}, batched=True) for i in range(3)]
    assert (await http_sidecar.post_batch(bodies)).status == 200
    await wait_until(lambda: len(receiver.batches) >= 3, what="retried batches")

    receiver.batch_answer = 200

    for body in bodies:
        await receiver.wait_acknowledged(body["executionId"])
    assert all(c.via == "batch" for c in receiver.calls)
    await wait_until(lambda: http_sidecar.spooled() == [], what="the spool to empty")

"""The executionId is an idempotency key: a known id never starts a second run."""

from __future__ import annotations

import asyncio
from urllib.parse import quote


async def test_duplicate_while_running_and_after_finish_runs_once(http_sidecar, demo_app, receiver):
    body = receiver.dispatch_body("sleep", {"seconds": 0.5})

    first = await http_sidecar.post(body)
    while_running = await http_sidecar.post(body)

    assert first.status == 202
    assert while_running.status == 200
    assert while_running.body["executionId"] == body["executionId"]
    assert while_running.body["state"] == "running"

    await receiver.wait_acknowledged(body["executionId"])
    after_finish = await http_sidecar.post(body)

    assert after_finish.status == 200
    assert after_finish.body["state"] == "succeeded"
    assert after_finish.body["result"] == {"slept": 0.5}
    assert len(demo_app.ledger(body["executionId"])) == 1
    assert len(receiver.acknowledged(body["executionId"])) == 1


async def test_concurrent_duplicates_start_one_run(http_sidecar, demo_app, receiver):
    body = receiver.dispatch_body("echo", {"x": 1})

    replies = await asyncio.gather(*(http_sidecar.post(body) for _ in range(8)))

    assert sorted(r.status for r in replies) == [200] * 7 + [202]
    await receiver.wait_acknowledged(body["executionId"])
    assert len(demo_app.ledger(body["executionId"])) == 1


async def test_duplicate_is_answered_even_at_the_concurrency_limit(
    receiver, demo_app, start_sidecar
):
    sidecar = start_sidecar(handler_url=demo_app.handler_url, extra_args=("--max-concurrency", "1"))
    body = receiver.dispatch_body("sleep", {"seconds": 5})
    assert (await sidecar.post(body)).status == 202

    duplicate = await sidecar.post(body)

    assert duplicate.status == 200
    assert duplicate.body["state"] == "running"


async def test_duplicate_with_a_different_body_returns_the_first_run(
    http_sidecar, demo_app, receiver
):
    body = receiver.dispatch_body("echo", {"first": True})
    assert (await http_sidecar.post(body)).status == 202
    await receiver.wait_acknowledged(body["executionId"])

    again = await http_sidecar.post({**body, "payload": {"second": True}, "attempt": 2})

    assert again.status == 200
    assert again.body["result"] == {"first": True}
    assert again.body["attempt"] == 1
    assert len(demo_app.ledger(body["executionId"])) == 1


async def test_ids_with_slashes_and_unicode_are_addressable(http_sidecar, receiver):
    execution_id = "tests/demo-task:2024-05-01T12:00:00Z#é"
    body = receiver.dispatch_body("echo", execution_id=execution_id)
    assert (await http_sidecar.post(body)).status == 202
    await receiver.wait_acknowledged(execution_id)

    assert (await http_sidecar.get(quote(execution_id, safe=""))).status == 200
    assert (await http_sidecar.get(quote(execution_id, safe="/"))).status == 200


async def test_an_undelivered_result_stays_known_past_the_retention(
    receiver, demo_app, start_sidecar, wait_until
):
    sidecar = start_sidecar(
        handler_url=demo_app.handler_url, extra_args=("--finished-retention-seconds", "0.05")
    )
    receiver.answer = 500
    body = receiver.dispatch_body("echo", {"once": True})
    assert (await sidecar.post(body)).status == 202
    await wait_until(lambda: len(receiver.attempts(body["executionId"])) >= 3, what="retries")

    while_undelivered = await sidecar.post(body)

    assert while_undelivered.status == 200
    assert while_undelivered.body["state"] == "succeeded"
    assert len(demo_app.ledger(body["executionId"])) == 1

    # Once delivered, the finished run is forgotten after the retention window: memory is bounded.
    receiver.answer = 200
    await receiver.wait_acknowledged(body["executionId"])

    async def forgotten() -> bool:
        return (await sidecar.get(body["executionId"])).status == 404

    await wait_until(forgotten, what="the finished run to be forgotten")

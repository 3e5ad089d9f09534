"""Each pod runs at most ``--max-concurrency`` executions; one more is answered 429 busy."""

from __future__ import annotations


async def test_at_the_limit_new_runs_get_429_until_one_finishes(receiver, demo_app, start_sidecar):
    sidecar = start_sidecar(handler_url=demo_app.handler_url, extra_args=("--max-concurrency", "2"))
    short = receiver.dispatch_body("sleep", {"seconds": 0.6})
    long = receiver.dispatch_body("sleep", {"seconds": 30})
    assert (await sidecar.post(short)).status == 202
    assert (await sidecar.post(long)).status == 202

    extra = receiver.dispatch_body("echo", {"n": 3})
    busy = await sidecar.post(extra)

    assert busy.status == 429
    assert busy.body == {"error": "busy", "inFlight": 2, "capacity": 2}
    assert (await sidecar.get(extra["executionId"])).status == 404
    health = (await sidecar.healthz()).body
    assert (health["inFlight"], health["capacity"]) == (2, 2)

    await receiver.wait_acknowledged(short["executionId"])
    assert (await sidecar.post(extra)).status == 202
    await receiver.wait_acknowledged(extra["executionId"])
    assert len(demo_app.ledger(extra["executionId"])) == 1


async def test_default_capacity_is_four(http_sidecar, receiver):
    bodies = [receiver.dispatch_body("sleep", {"seconds": 30}) for _ in range(5)]

    statuses = [(await http_sidecar.post(body)).status for body in bodies]

    assert statuses == [202, 202, 202, 202, 429]

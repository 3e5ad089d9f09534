"""A dispatch's ``deadline`` (when the operator stops waiting for the attempt): a run that
arrives after it is never started, and a run is stopped by it even when ``timeoutSeconds`` would
let it go on. So the operator's retry after the deadline cannot overlap the attempt it gave up,
even when the pod hung with the dispatch in its socket's backlog."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def _at(seconds: float) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def test_a_run_arriving_after_its_deadline_is_refused_and_never_started(
    http_sidecar, demo_app, receiver
):
    body = {**receiver.dispatch_body("echo", {"n": 1}), "deadline": _at(-1)}

    reply = await http_sidecar.post(body)

    assert reply.status == 409
    assert reply.body["field"] == "deadline"
    assert "not started" in reply.body["error"]
    assert (await http_sidecar.get(body["executionId"])).status == 404
    assert demo_app.ledger(body["executionId"]) == []
    assert (await http_sidecar.healthz()).body["inFlight"] == 0


async def test_a_late_batch_item_is_refused_while_the_others_start(
    http_sidecar, demo_app, receiver
):
    late = {**receiver.dispatch_body("echo", {"n": 1}), "deadline": _at(-1)}
    timely = {**receiver.dispatch_body("echo", {"n": 2}), "deadline": _at(30)}

    reply = await http_sidecar.post_batch([late, timely])

    assert reply.status == 200
    first, second = reply.body["results"]
    assert (first["status"], first["field"]) == (409, "deadline")
    assert second["status"] == 202
    assert (await receiver.wait_acknowledged(timely["executionId"]))["status"] == "succeeded"
    assert demo_app.ledger(late["executionId"]) == []


async def test_a_run_is_stopped_at_its_deadline_before_its_timeout(http_sidecar, receiver):
    body = {**receiver.dispatch_body("sleep", {"seconds": 30}, timeout=60), "deadline": _at(1)}
    assert (await http_sidecar.post(body)).status == 202

    callback = await receiver.wait_acknowledged(body["executionId"])

    assert callback["status"] == "timed_out"
    assert "deadline" in callback["error"]  # not the 60 s timeout


async def test_a_deadline_that_is_not_a_timestamp_is_a_400_naming_it(http_sidecar, receiver):
    body = {**receiver.dispatch_body("echo", {}), "deadline": "tomorrow"}

    reply = await http_sidecar.post(body)

    assert reply.status == 400
    assert reply.body["field"] == "deadline"

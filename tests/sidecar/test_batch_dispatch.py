"""``POST /v1/executions:batch``: one request, one answer per run, each decided as the single
endpoint would decide it, in order."""

from __future__ import annotations

import json
import signal

import pytest


async def test_one_batch_mixes_accepted_known_busy_and_refused(receiver, demo_app, start_sidecar):
    sidecar = start_sidecar(handler_url=demo_app.handler_url, extra_args=("--max-concurrency", "2"))
    running = receiver.dispatch_body("sleep", {"seconds": 30})
    assert (await sidecar.post(running)).status == 202
    new = receiver.dispatch_body("sleep", {"seconds": 30})
    malformed = receiver.dispatch_body("echo", task="no-namespace")
    over = receiver.dispatch_body("echo")

    reply = await sidecar.post_batch([running, new, malformed, over])

    assert reply.status == 200
    known, accepted, refused, busy = reply.body["results"]
    assert accepted == {
        "executionId": new["executionId"], "result": "accepted", "status": 202,
        "state": "running", "pod": f"pod-{sidecar.host}",
    }  # fmt: skip
    assert (known["executionId"], known["result"], known["status"]) == (
        running["executionId"],
        "known",
        200,
    )
    assert known["run"] == (await sidecar.get(running["executionId"])).body
    assert (refused["executionId"], refused["result"], refused["status"]) == (
        malformed["executionId"],
        "refused",
        400,
    )
    assert refused["field"] == "task" and "task" in refused["error"]
    assert busy == {
        "executionId": over["executionId"], "result": "busy", "status": 429,
        "error": "busy", "inFlight": 2, "capacity": 2,
    }  # fmt: skip
    # Each item got what the single endpoint answers for the same body.
    for item, body in ((refused, malformed), (busy, over)):
        single = await sidecar.post(body)
        expected = {k: v for k, v in item.items() if k not in ("executionId", "result", "status")}
        assert (single.status, single.body) == (item["status"], expected)
    # Only the accepted run started; the refused and the busy one are unknown to the pod.
    await sidecar.wait_state(new["executionId"], "running")
    for body in (malformed, over):
        assert (await sidecar.get(body["executionId"])).status == 404
    ran = {entry["executionId"] for entry in demo_app.ledger()}
    assert ran == {running["executionId"], new["executionId"]}


async def test_capacity_fills_up_within_one_batch(receiver, demo_app, start_sidecar):
    sidecar = start_sidecar(handler_url=demo_app.handler_url, extra_args=("--max-concurrency", "2"))
    bodies = [receiver.dispatch_body("sleep", {"seconds": 30}) for _ in range(4)]

    reply = await sidecar.post_batch(bodies)

    results = reply.body["results"]
    assert [r["result"] for r in results] == ["accepted", "accepted", "busy", "busy"]
    assert [r["status"] for r in results] == [202, 202, 429, 429]
    assert [r["executionId"] for r in results] == [b["executionId"] for b in bodies]
    assert (await sidecar.healthz()).body["inFlight"] == 2


async def test_the_same_id_twice_in_a_batch_runs_once(receiver, demo_app, start_sidecar):
    # Capacity 1: the duplicate must be answered "known", not "busy".
    sidecar = start_sidecar(handler_url=demo_app.handler_url, extra_args=("--max-concurrency", "1"))
    body = receiver.dispatch_body("echo", {"once": True})

    reply = await sidecar.post_batch([body, {**body, "payload": {"twice": True}}])

    first, second = reply.body["results"]
    assert (first["result"], first["status"]) == ("accepted", 202)
    assert (second["result"], second["status"]) == ("known", 200)
    assert second["run"]["executionId"] == body["executionId"]
    callback = await receiver.wait_acknowledged(body["executionId"])
    assert callback["result"] == {"once": True}
    # The single endpoint and a later batch know the same run.
    again = await sidecar.post(body)
    assert (again.status, again.body["state"]) == (200, "succeeded")
    later = (await sidecar.post_batch([body])).body["results"]
    assert [(r["result"], r["run"]["result"]) for r in later] == [("known", {"once": True})]
    assert len(demo_app.ledger(body["executionId"])) == 1
    assert len(receiver.acknowledged(body["executionId"])) == 1


async def test_a_run_dispatched_alone_is_known_to_a_batch(http_sidecar, demo_app, receiver):
    body = receiver.dispatch_body("sleep", {"seconds": 0.5})
    assert (await http_sidecar.post(body)).status == 202

    (item,) = (await http_sidecar.post_batch([body])).body["results"]

    assert (item["result"], item["status"], item["run"]["state"]) == ("known", 200, "running")
    await receiver.wait_acknowledged(body["executionId"])
    assert len(demo_app.ledger(body["executionId"])) == 1


async def test_a_draining_pod_answers_each_new_item_draining(
    receiver, demo_app, start_sidecar, wait_until
):
    sidecar = start_sidecar(handler_url=demo_app.handler_url, extra_args=("--grace-seconds", "20"))
    running = receiver.dispatch_body("sleep", {"seconds": 1})
    assert (await sidecar.post(running)).status == 202
    sidecar.send(signal.SIGTERM)

    async def draining() -> bool:
        return (await sidecar.healthz()).status == 503

    await wait_until(draining, what="the sidecar to drain")
    fresh = receiver.dispatch_body("echo")

    reply = await sidecar.post_batch([fresh, running])

    assert reply.status == 200
    draining, known = reply.body["results"]
    assert draining == {
        "executionId": fresh["executionId"], "result": "draining", "status": 503,
        "error": "draining",
    }  # fmt: skip
    assert (known["result"], known["status"]) == ("known", 200)
    await receiver.wait_acknowledged(running["executionId"])
    assert await sidecar.wait_exit() == 0


async def test_a_malformed_item_is_refused_alone(shared_sidecar, receiver):
    good = receiver.dispatch_body("echo")
    bad_url = receiver.dispatch_body("echo", callbackBatchUrl="ftp://operator/callbacks")

    reply = await shared_sidecar.post_batch([5, good, bad_url, None])

    not_object, accepted, refused_url, null = reply.body["results"]
    assert (not_object["result"], not_object["status"]) == ("refused", 400)
    assert not_object["executionId"] is None and not_object["field"] == "executions[0]"
    assert null["field"] == "executions[3]"
    assert accepted["result"] == "accepted"
    assert (refused_url["result"], refused_url["field"]) == ("refused", "callbackBatchUrl")
    assert "callbackBatchUrl" in refused_url["error"]
    # Validated alike by the single endpoint; null counts as absent.
    single = await shared_sidecar.post(bad_url)
    assert (single.status, single.body["field"]) == (400, "callbackBatchUrl")
    assert (await shared_sidecar.post({**bad_url, "callbackBatchUrl": None})).status == 202


@pytest.fixture
def small_batches(receiver, demo_app, start_sidecar):
    return start_sidecar(
        handler_url=demo_app.handler_url,
        extra_args=("--max-batch-items", "3", "--max-batch-bytes", "4096"),
    )


async def test_more_items_than_allowed_is_400_naming_executions(small_batches, receiver, demo_app):
    bodies = [receiver.dispatch_body("echo") for _ in range(4)]

    reply = await small_batches.post_batch(bodies)

    assert reply.status == 400
    assert reply.body["field"] == "executions" and "3" in reply.body["error"]
    assert (await small_batches.post_batch(bodies[:3])).status == 200
    assert (await small_batches.get(bodies[3]["executionId"])).status == 404


async def test_a_body_above_the_limit_is_413_and_runs_nothing(small_batches, receiver, demo_app):
    bodies = [receiver.dispatch_body("echo", {"filler": "x" * 3000}) for _ in range(2)]

    reply = await small_batches.post_batch(bodies)

    assert reply.status == 413
    assert reply.body["limit"] == 4096 and "--max-batch-bytes" in reply.body["error"]
    for body in bodies:
        assert (await small_batches.get(body["executionId"])).status == 404
    # The token is checked before the body is even read.
    assert (await small_batches.post_batch(bodies, token="wrong")).status == 401
    assert (await small_batches.post_batch(bodies[:1], token=None)).status == 401


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        pytest.param(b"{not json", "body", id="not-json"),
        pytest.param(b"[]", "body", id="array"),
        pytest.param(b"{}", "executions", id="no-executions"),
        pytest.param(b'{"executions": null}', "executions", id="null"),
        pytest.param(b'{"executions": {"a": 1}}', "executions", id="object"),
    ],
)
async def test_a_batch_that_is_not_a_list_is_400(shared_sidecar, raw, field):
    reply = await shared_sidecar.post_raw_batch(raw)

    assert reply.status == 400
    assert reply.body["field"] == field and reply.body["error"]


async def test_an_empty_batch_has_no_results(shared_sidecar):
    reply = await shared_sidecar.post_raw_batch(json.dumps({"executions": []}).encode())

    assert (reply.status, reply.body) == (200, {"results": []})


async def test_the_default_limit_takes_batches_beyond_the_single_endpoints(http_sidecar, receiver):
    # 1.5 MiB: above the single endpoint's 1 MiB, below the batch's default 8 MiB.
    bodies = [receiver.dispatch_body("echo", {"filler": "x" * 768 * 1024}) for _ in range(2)]

    reply = await http_sidecar.post_batch(bodies)

    assert [r["result"] for r in reply.body["results"]] == ["accepted", "accepted"]
    too_big = {**bodies[0], "executionId": "too-big", "payload": {"filler": "x" * 1536 * 1024}}
    assert (await http_sidecar.post(too_big)).status == 413
    for body in bodies:
        await receiver.wait_acknowledged(body["executionId"])

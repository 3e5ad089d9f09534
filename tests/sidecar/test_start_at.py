"""``startAt`` (protocol version 3): the operator sends a run a little ahead of its tick, and the
sidecar admits it at once (it holds its slot) and starts the handler at ``startAt``. Cancelled
while held, it ends cancelled without the handler ever being called."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cadenza_sidecar import protocol, runs


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_the_health_answer_says_the_protocol_version(http_sidecar):
    assert (await http_sidecar.healthz()).body["protocol"] == 3


async def test_a_run_sent_ahead_is_accepted_at_once_and_started_at_start_at(
    http_sidecar, demo_app, receiver
):
    start = datetime.now(UTC) + timedelta(seconds=1.5)
    body = {**receiver.dispatch_body("echo", {"n": 1}), "startAt": _stamp(start)}

    reply = await http_sidecar.post(body)

    assert reply.status == 202
    held = (await http_sidecar.healthz()).body
    assert held["inFlight"] == 1  # it holds its slot while it waits
    assert demo_app.ledger(body["executionId"]) == []
    callback = await receiver.wait_acknowledged(body["executionId"])
    assert callback["status"] == "succeeded"
    # startedAt is when the handler started, not when the run arrived.
    assert _parse(callback["startedAt"]) >= start.replace(
        microsecond=start.microsecond // 1000 * 1000
    )
    (call,) = demo_app.ledger(body["executionId"])
    assert _parse(call["time"]) >= start - timedelta(milliseconds=1)


async def test_a_start_at_already_past_starts_the_run_at_once(http_sidecar, receiver):
    body = {**receiver.dispatch_body("echo", {"n": 2}), "startAt": _stamp(datetime.now(UTC))}

    assert (await http_sidecar.post(body)).status == 202

    assert (await receiver.wait_acknowledged(body["executionId"]))["status"] == "succeeded"


async def test_a_run_cancelled_while_held_never_reaches_the_app(http_sidecar, demo_app, receiver):
    start = datetime.now(UTC) + timedelta(seconds=5)
    body = {**receiver.dispatch_body("echo", {"n": 3}), "startAt": _stamp(start)}
    assert (await http_sidecar.post(body)).status == 202

    reply = await http_sidecar.delete(body["executionId"])

    assert reply.status == 202
    assert reply.body["state"] == "cancelled"
    callback = await receiver.wait_acknowledged(body["executionId"])
    assert callback["status"] == "cancelled"
    assert "before it started" in callback["error"]
    assert demo_app.ledger(body["executionId"]) == []
    assert (await http_sidecar.healthz()).body["inFlight"] == 0


async def test_a_run_held_past_its_deadline_ends_timed_out_and_never_reaches_the_app(
    http_sidecar, demo_app, receiver
):
    """A pod frozen (SIGSTOP, a starved node) through a held run's tick wakes past the run's
    deadline: the operator has given the attempt up by then and may have sent it elsewhere, so
    the sidecar must not start it. A deadline before ``startAt`` is the same moment, reached
    without freezing the process."""
    now = datetime.now(UTC)
    body = {
        **receiver.dispatch_body("echo", {"n": 6}),
        "startAt": _stamp(now + timedelta(seconds=1.5)),
        "deadline": _stamp(now + timedelta(seconds=0.8)),
    }

    assert (await http_sidecar.post(body)).status == 202  # its deadline is still ahead

    callback = await receiver.wait_acknowledged(body["executionId"])
    assert callback["status"] == "timed_out"
    assert callback["error"] == runs.HELD_PAST_DEADLINE
    assert demo_app.ledger(body["executionId"]) == []
    assert (await http_sidecar.healthz()).body["inFlight"] == 0


async def test_a_batch_item_held_beside_one_that_starts_now(http_sidecar, demo_app, receiver):
    start = datetime.now(UTC) + timedelta(seconds=1)
    held = {**receiver.dispatch_body("echo", {"n": 4}), "startAt": _stamp(start)}
    now = receiver.dispatch_body("echo", {"n": 5})

    reply = await http_sidecar.post_batch([held, now])

    assert [item["status"] for item in reply.body["results"]] == [202, 202]
    first = await receiver.wait_acknowledged(now["executionId"])
    second = await receiver.wait_acknowledged(held["executionId"])
    assert _parse(first["startedAt"]) < _parse(second["startedAt"])


async def test_a_start_at_that_is_not_a_timestamp_is_a_400_naming_it(http_sidecar, receiver):
    for bad in ("soon", "2026-12-04T10:00:00", 1733300000, True):
        body = {**receiver.dispatch_body("echo", {}), "startAt": bad}

        reply = await http_sidecar.post(body)

        assert reply.status == 400, bad
        assert reply.body["field"] == "startAt"
        assert (await http_sidecar.get(body["executionId"])).status == 404


def test_a_run_is_held_at_most_max_hold_seconds() -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    body = {
        "executionId": "e-1",
        "taskUid": "u",
        "task": "ns/t",
        "epoch": 1,
        "handler": "h",
        "scheduledAt": "2026-12-04T12:00:00Z",
        "attempt": 1,
        "timeoutSeconds": 5,
        "callbackUrl": "http://127.0.0.1:1/cb",
        "callbackToken": "t",
    }

    def hold(start_at: str | None) -> float:
        extra = {} if start_at is None else {"startAt": start_at}
        return protocol.execution_request_from({**body, **extra}).hold_seconds(now)

    assert hold(None) == 0.0
    assert hold("2026-12-04T12:00:00.250Z") == 0.25
    assert hold("2026-12-04T11:59:59Z") == 0.0  # due: started at once
    assert hold("2026-12-04T13:00:00+01:00") == 0.0  # the same moment in another zone
    assert hold("2026-12-04T12:05:00Z") == protocol.MAX_HOLD_SECONDS  # a clock far off

"""Malformed dispatch bodies get 400 with a message naming the offending field."""

from __future__ import annotations

import pytest


def _without(field: str):
    return lambda body: {k: v for k, v in body.items() if k != field}


def _with(field: str, value: object):
    return lambda body: {**body, field: value}


MALFORMED = [
    pytest.param(_with("executionId", ""), "executionId", id="executionId-empty"),
    pytest.param(_with("executionId", "x" * 129), "executionId", id="executionId-too-long"),
    pytest.param(_with("executionId", 42), "executionId", id="executionId-number"),
    pytest.param(_without("executionId"), "executionId", id="executionId-missing"),
    pytest.param(_without("taskUid"), "taskUid", id="taskUid-missing"),
    pytest.param(_with("task", "no-namespace"), "task", id="task-without-slash"),
    pytest.param(_with("task", "ns/name/extra"), "task", id="task-two-slashes"),
    pytest.param(_with("epoch", -1), "epoch", id="epoch-negative"),
    pytest.param(_with("epoch", "3"), "epoch", id="epoch-string"),
    pytest.param(_with("epoch", True), "epoch", id="epoch-bool"),
    pytest.param(_with("handler", ""), "handler", id="handler-empty"),
    pytest.param(_with("handler", ["echo"]), "handler", id="handler-list"),
    pytest.param(_with("scheduledAt", "yesterday"), "scheduledAt", id="scheduledAt-prose"),
    pytest.param(
        _with("scheduledAt", "2024-05-01T12:00:00"), "scheduledAt", id="scheduledAt-no-zone"
    ),
    pytest.param(
        _with("scheduledAt", "2024-13-01T12:00:00Z"), "scheduledAt", id="scheduledAt-month-13"
    ),
    pytest.param(_with("attempt", 0), "attempt", id="attempt-zero"),
    pytest.param(_with("attempt", 1.5), "attempt", id="attempt-fraction"),
    pytest.param(_with("timeoutSeconds", 0), "timeoutSeconds", id="timeoutSeconds-zero"),
    pytest.param(_with("timeoutSeconds", "30"), "timeoutSeconds", id="timeoutSeconds-string"),
    pytest.param(
        _with("callbackUrl", "/api/v1/callbacks"), "callbackUrl", id="callbackUrl-relative"
    ),
    pytest.param(_with("callbackUrl", "ftp://op/cb"), "callbackUrl", id="callbackUrl-ftp"),
    pytest.param(
        _with("callbackUrl", "http://host:notaport/cb"), "callbackUrl", id="callbackUrl-port"
    ),
    pytest.param(_without("callbackToken"), "callbackToken", id="callbackToken-missing"),
    pytest.param(_with("callbackToken", None), "callbackToken", id="callbackToken-null"),
]


@pytest.mark.parametrize(("mutate", "field"), MALFORMED)
async def test_malformed_field_is_named(shared_sidecar, receiver, shared_demo_app, mutate, field):
    body = mutate(receiver.dispatch_body("echo"))

    reply = await shared_sidecar.post(body)

    assert reply.status == 400
    assert reply.body["field"] == field
    assert field in reply.body["error"]
    ran = [e["executionId"] for e in shared_demo_app.ledger()]
    assert body.get("executionId") not in ran


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b"[1, 2]", id="array"),
        pytest.param(b'"text"', id="string"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe\x00", id="not-utf8"),
        pytest.param(b'{"timeoutSeconds": NaN}', id="nan"),
    ],
)
async def test_unparseable_body_names_the_body(shared_sidecar, raw):
    reply = await shared_sidecar.request(
        "POST",
        "/v1/executions",
        data=raw,
        headers={"Content-Type": "application/json", **shared_sidecar.headers()},
    )

    assert reply.status == 400
    assert reply.body["field"] == "body"
    assert reply.body["error"]


async def test_unknown_fields_are_ignored_and_payload_defaults_to_null(shared_sidecar, receiver):
    body = receiver.dispatch_body("echo", futureField={"nested": 1}, anotherOne=[1, 2])
    del body["payload"]

    reply = await shared_sidecar.post(body)

    assert reply.status == 202
    callback = await receiver.wait_acknowledged(body["executionId"])
    assert callback["status"] == "succeeded"
    assert callback["result"] is None


async def test_fractional_timeout_and_offset_timestamps_are_accepted(shared_sidecar, receiver):
    body = receiver.dispatch_body(
        "echo", [1], timeout=0.75, scheduledAt="2024-05-01T14:00:00.123456+02:00"
    )

    reply = await shared_sidecar.post(body)

    assert reply.status == 202
    assert (await receiver.wait_acknowledged(body["executionId"]))["result"] == [1]


def test_the_catalogue_covers_every_required_field():
    named = {param.values[1] for param in MALFORMED}
    required = {
        "executionId", "taskUid", "task", "epoch", "handler", "scheduledAt", "attempt",
        "timeoutSeconds", "callbackUrl", "callbackToken",
    }  # fmt: skip
    assert named == required
    assert len(MALFORMED) >= 12

"""``/v1/*`` needs the dispatch token when one is configured; ``/healthz`` never does."""

from __future__ import annotations

import pytest

WRONG = [
    pytest.param(None, id="missing"),
    pytest.param("not-the-token", id="wrong"),
    pytest.param("dispatch-token-for-test", id="prefix-of-the-token"),
    pytest.param("", id="empty"),
]


@pytest.mark.parametrize("token", WRONG)
async def test_post_without_the_right_token_is_401_and_runs_nothing(
    shared_sidecar, shared_demo_app, receiver, token
):
    body = receiver.dispatch_body("echo")

    reply = await shared_sidecar.post(body, token=token)

    assert reply.status == 401
    assert "token" in reply.body["error"]
    assert (await shared_sidecar.get(body["executionId"])).status == 404
    ran = [e["executionId"] for e in shared_demo_app.ledger()]
    assert body["executionId"] not in ran


@pytest.mark.parametrize("token", WRONG)
async def test_get_and_delete_need_the_token(shared_sidecar, receiver, token):
    body = receiver.dispatch_body("echo")
    assert (await shared_sidecar.post(body)).status == 202

    assert (await shared_sidecar.get(body["executionId"], token=token)).status == 401
    assert (await shared_sidecar.delete(body["executionId"], token=token)).status == 401
    assert (await shared_sidecar.get("unknown-id", token=token)).status == 401


async def test_other_schemes_are_refused(shared_sidecar):
    reply = await shared_sidecar.request(
        "GET",
        "/v1/executions/anything",
        headers={"Authorization": f"Basic {shared_sidecar.token}"},
    )

    assert reply.status == 401


async def test_healthz_needs_no_token(shared_sidecar):
    assert (await shared_sidecar.healthz()).status == 200


async def test_token_from_the_environment(receiver, demo_app, start_sidecar):
    sidecar = start_sidecar(handler_url=demo_app.handler_url, token="env-token", token_via="env")
    body = receiver.dispatch_body("echo")

    assert (await sidecar.post(body, token="dispatch-token-for-tests")).status == 401
    assert (await sidecar.post(body, token="env-token")).status == 202


async def test_without_a_token_configured_anyone_may_dispatch(receiver, demo_app, start_sidecar):
    sidecar = start_sidecar(
        handler_url=demo_app.handler_url, token=None, extra_args=("--insecure-no-auth",)
    )
    body = receiver.dispatch_body("echo")

    assert (await sidecar.post(body, token=None)).status == 202
    await receiver.wait_acknowledged(body["executionId"])
    assert "no dispatch token configured" in sidecar.log()

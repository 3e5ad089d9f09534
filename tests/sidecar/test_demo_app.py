"""The demo application container: its handlers and its ledger of calls."""

from __future__ import annotations

import aiohttp
import pytest


async def call(app, **body):
    async with (
        aiohttp.ClientSession() as session,
        session.post(app.handler_url, json=body) as response,
    ):
        return response.status, await response.json()


async def test_echo_returns_the_payload(shared_demo_app):
    assert await call(shared_demo_app, executionId="d1", handler="echo", payload=[1, "two"]) == (
        200,
        [1, "two"],
    )


async def test_sleep_sleeps_and_rejects_a_bad_payload(shared_demo_app):
    assert await call(
        shared_demo_app, executionId="d2", handler="sleep", payload={"seconds": 0.1}
    ) == (
        200,
        {"slept": 0.1},
    )
    status, body = await call(shared_demo_app, executionId="d3", handler="sleep", payload={})
    assert status == 400
    assert "seconds" in body["error"]


async def test_fail_answers_500(shared_demo_app):
    status, _ = await call(shared_demo_app, executionId="d4", handler="fail")
    assert status == 500


@pytest.mark.parametrize(("attempt", "status"), [(1, 500), (2, 500), (3, 200)])
async def test_flaky_fails_the_first_attempts(shared_demo_app, attempt, status):
    reply_status, _ = await call(
        shared_demo_app,
        executionId="flaky-run",
        handler="flaky",
        attempt=attempt,
        payload={"failures": 2},
    )
    assert reply_status == status


async def test_unknown_handler_is_404_naming_the_known_ones(shared_demo_app):
    status, body = await call(shared_demo_app, executionId="d5", handler="teleport")
    assert status == 404
    assert "teleport" in body["error"]
    assert "echo" in body["error"]


async def test_every_call_is_in_the_ledger(shared_demo_app):
    await call(shared_demo_app, executionId="ledgered", handler="echo", attempt=4)
    await call(shared_demo_app, executionId="ledgered", handler="nope", attempt=5)

    entries = shared_demo_app.ledger("ledgered")

    assert [(e["handler"], e["attempt"]) for e in entries] == [("echo", 4), ("nope", 5)]
    assert all(e["time"] for e in entries)

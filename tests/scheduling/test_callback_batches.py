"""``POST /api/v1/callbacks``: a batch of sidecar reports, each checked and answered as the single
route would answer it, all applied in one transaction.

The first tests serve the route from a real aiohttp server in the test, on rows prepared in a
scratch MariaDB database; the last one posts to a real replica beside a real retried run. Tokens
are planted as in ``test_callbacks_api`` (the sha256 of a token the test chose).
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import insert, text
from sqlalchemy.engine import Engine, make_url

from cadenza.api import callback_batches
from cadenza.core.ids import ExecutionId
from cadenza.core.transitions import RunStatus
from cadenza.devenv.controlplane import free_port
from cadenza.store import schema
from tests.scheduling import test_callbacks_api as single
from tests.scheduling.test_callbacks_api import TOKEN, post, prepared_run, report, row_now, rows
from tests.support import async_wait_for
from tests.support.scenario import Scenario

# The single route's scene and its retried run, for the test against a replica.
scene = single.scene
retried_run = single.retried_run


@dataclass
class Route:
    """The batch route on a real HTTP server, and the runs its hook was told about."""

    url: str
    applied: list[ExecutionId] = field(default_factory=list)

    def item(self, run: int, token: str | None = TOKEN, **fields: Any) -> dict[str, Any]:
        """A batch item as a sidecar sends it: the report plus its run's URL and token."""
        body = {"callbackUrl": f"http://any-replica:8080/api/v1/callbacks/{run}", **report()}
        if token is not None:
            body["token"] = token
        return {**body, **fields}

    async def post(self, items: Any) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as session, session.post(
            self.url, json={"callbacks": items}
        ) as resp:  # fmt: skip
            return resp.status, await resp.json()


@pytest.fixture
async def route(engine: Engine) -> AsyncIterator[Route]:
    port = free_port()
    served = Route(f"http://127.0.0.1:{port}{callback_batches.BATCH_PATH}")
    app = web.Application()
    app.add_routes(callback_batches.routes(engine, served.applied.append))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield served
    await runner.cleanup()


def add_attempt(engine: Engine, run: ExecutionId, attempt: int) -> None:
    """An earlier attempt of ``run``, dispatched with ``TOKEN`` and failed."""
    with engine.begin() as conn:
        conn.execute(
            insert(schema.execution_attempts).values(
                execution_id=run, attempt=attempt, executor_name="pool", pod_name="pool-0",
                pod_ip="127.0.0.9", callback_token_hash=single.sha256(TOKEN), status="failed",
                dispatched_at=datetime.now(UTC),
            )
        )  # fmt: skip


async def test_each_item_gets_its_own_answer(route: Route, engine: Engine) -> None:
    done = prepared_run(engine, RunStatus.RUNNING)
    later = prepared_run(engine, RunStatus.RUNNING, attempt=2, retry={"maxAttempts": 2})
    add_attempt(engine, later, 1)
    items = [
        route.item(done, result={"n": 1}),
        route.item(later, attempt=2, token="forged"),
        route.item(done + 1000),
        route.item(later, attempt=1, status="failed"),
        route.item(later, attempt=2, status="done"),
        route.item(done, result={"n": 1}),  # a duplicate of the first
        "not an object",
        route.item(later, attempt=2, token=None),
        route.item(later, attempt=2, exitCode="x"),
        route.item(later, attempt=2, result="finally"),
    ]
    expected = [200, 403, 404, 409, 400, 200, 400, 400, 400, 200]

    status, body = await route.post(items)

    assert status == 200
    answers = body["results"]
    assert [a["status"] for a in answers] == expected
    assert answers[0]["body"] == {"applied": True, "status": "succeeded"}
    assert answers[5]["body"] == {"applied": False, "status": "succeeded"}
    assert answers[9]["body"] == {"applied": True, "status": "succeeded"}
    assert "token" in answers[1]["body"]["error"] and "stale" in answers[3]["body"]["error"]
    fields = [answers[i]["body"].get("field") for i in (4, 6, 7, 8)]
    assert fields == ["status", "callbacks[6]", "token", "exitCode"]
    assert answers[0]["executionId"] == "x-1" and "executionId" not in answers[6]
    assert route.applied == [done, done, later]
    (row, (attempt,)) = rows(engine, done)
    assert (row["status"], row["result"], attempt["status"]) == ("succeeded", {"n": 1}, "succeeded")
    row, attempts = rows(engine, later)
    assert (row["status"], row["result"]) == ("succeeded", "finally")
    assert [a["status"] for a in attempts] == ["failed", "succeeded"]

    # The whole batch again, as a sidecar re-sends it after a lost answer: nothing changes.
    before = rows(engine, done), rows(engine, later)
    status, again = await route.post(items)
    assert [a["status"] for a in again["results"]] == [
        200,
        403,
        404,
        409,
        400,
        200,
        400,
        400,
        400,
        200,
    ]
    assert {a["body"]["applied"] for a in again["results"] if a["status"] == 200} == {False}
    assert (rows(engine, done), rows(engine, later)) == before


async def test_all_items_commit_together(route: Route, engine: Engine, database: str) -> None:
    first = prepared_run(engine, RunStatus.RUNNING)
    second = prepared_run(engine, RunStatus.RUNNING)
    db = make_url(database).database
    with engine.connect() as blocker:
        # Another transaction holds the second run's row: the batch applies the first run (lower
        # id, so locked first), then waits for the second, its transaction still open.
        blocker.execute(
            text("SELECT id FROM task_executions WHERE id = :id FOR UPDATE"), {"id": second}
        )
        batch = asyncio.create_task(route.post([route.item(second), route.item(first)]))

        def waiting() -> bool:
            with engine.connect() as conn:
                return bool(conn.execute(
                    text(
                        "SELECT COUNT(*) FROM information_schema.INNODB_TRX t"
                        " JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id"
                        " WHERE t.trx_state = 'LOCK WAIT' AND p.DB = :db"
                    ),
                    {"db": db},
                ).scalar())  # fmt: skip

        await async_wait_for(lambda: asyncio.to_thread(waiting), 20, "the batch to wait")
        assert rows(engine, first)[0]["status"] == "running"  # applied, not yet committed
        blocker.rollback()

        status, body = await batch

    assert status == 200 and [a["status"] for a in body["results"]] == [200, 200]
    assert rows(engine, first)[0]["status"] == rows(engine, second)[0]["status"] == "succeeded"
    assert route.applied == [second, first]


async def test_a_batch_of_results_larger_than_the_servers_packet_limit_is_applied_whole(
    route: Route, engine: Engine
) -> None:
    # Results may be a MiB each and a batch 32 MiB: more than one statement to MariaDB can
    # carry (max_allowed_packet), so the store writes such a batch in several.
    with engine.connect() as conn:
        packet = int(conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar_one())
    big = "r" * 900_000
    runs = [prepared_run(engine, RunStatus.RUNNING) for _ in range(packet // len(big) + 2)]
    items = [route.item(run, result=[n, big]) for n, run in enumerate(runs)]
    raw = io.BytesIO(json.dumps({"callbacks": items}).encode())  # as the sidecar sends it

    async with aiohttp.ClientSession() as session, session.post(
        route.url, data=raw, headers={"Content-Type": "application/json"}
    ) as resp:  # fmt: skip
        status, body = resp.status, await resp.json()

    assert status == 200 and [a["status"] for a in body["results"]] == [200] * len(runs)
    for n, run in enumerate(runs):
        row, (attempt,) = rows(engine, run)
        assert (row["status"], attempt["status"]) == ("succeeded", "succeeded")
        assert row["result"] == [n, big]


@pytest.mark.parametrize(
    ("raw", "status", "named"),
    [
        pytest.param(b"{nope", 400, "body", id="not-json"),
        pytest.param(b"[]", 400, "body", id="array"),
        pytest.param(b"{}", 400, "callbacks", id="no-callbacks"),
        pytest.param(b'{"callbacks": {}}', 400, "callbacks", id="object"),
        pytest.param(
            b'{"callbacks": [' + b",".join([b"{}"] * 1001) + b"]}", 400, "callbacks", id="1001"
        ),
    ],
)
async def test_a_batch_that_is_not_a_list_is_refused_whole(
    route: Route, raw: bytes, status: int, named: str
) -> None:
    async with aiohttp.ClientSession() as session, session.post(route.url, data=raw) as resp:
        assert resp.status == status
        assert (await resp.json())["field"] == named
    assert route.applied == []


async def test_an_empty_batch_touches_nothing(route: Route) -> None:
    assert await route.post([]) == (200, {"results": []})


# -- against a replica ------------------------------------------------------------------------


def test_a_replica_answers_each_item_as_the_single_route(
    scene: Scenario, retried_run: dict[str, Any]
) -> None:
    run = retried_run["id"]
    single.plant(scene, run, 1, "first-attempt")
    single.plant(scene, run, 2, "second-attempt")
    before = row_now(scene, run)
    tried = scene.attempts(run)
    replica = scene.replicas.members[0]
    url = f"{replica.url}/api/v1/callbacks/{run}"

    def item(token: str, **fields: Any) -> dict[str, Any]:
        return {"callbackUrl": url, "token": token, **report(**fields)}

    success = {"status": "succeeded", "attempt": 2, "result": json.loads(before["result"])}
    items = [
        item("second-attempt", **success),  # a duplicate of the report that finished the run
        item("first-attempt", status="failed", attempt=2),
        {**item("second-attempt", **success), "callbackUrl": f"{url}000"},
        item("first-attempt", status="failed", attempt=1),
        item("second-attempt", status="running", attempt=2),
        item("second-attempt", status="failed", attempt=2, error="late"),
    ]

    status, body = post(f"{replica.url}/api/v1/callbacks", {"callbacks": items})

    assert status == 200, body
    answers = [(a["status"], a["body"]) for a in body["results"]]
    assert [s for s, _ in answers] == [200, 403, 404, 409, 400, 200]
    assert answers[0][1] == answers[5][1] == {"applied": False, "status": "succeeded"}
    assert answers[4][1]["field"] == "status"
    # Each answer is the one the single route gives for the same report.
    for sent, (status_, answer) in zip(items, answers, strict=True):
        target = sent["callbackUrl"]
        alone = {k: v for k, v in sent.items() if k not in ("callbackUrl", "token")}
        assert post(target, alone, token=sent["token"]) == (status_, answer)
    assert row_now(scene, run) == before
    assert scene.attempts(run) == tried

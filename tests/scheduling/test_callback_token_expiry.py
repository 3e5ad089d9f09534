"""A run's callback tokens stop working once the run has been over for longer than the grace.

Within the grace (``CADENZA_CALLBACK_GRACE_SECONDS``) a repeated report is acknowledged as
before; after it every callback with one of the run's tokens, single or as a batch item, is
refused 410 Gone (the sidecar's "refused for good") and changes nothing stored. The grace runs
on the database's clock from the ``updated_at`` the run's row took with its final state, so a
test ages a run by moving that column back, or waits (with a deadline) on a short grace.

The routes are served by the operator's own code on a real aiohttp server in the test, on rows
prepared in a scratch MariaDB database; the last test posts to a real replica.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine

from cadenza.api import callback_batches, callbacks
from cadenza.core.ids import ExecutionId
from cadenza.core.transitions import RunStatus
from cadenza.devenv.controlplane import free_port
from cadenza.store import schema
from tests.scheduling import test_callbacks_api as single
from tests.scheduling.test_callbacks_api import TOKEN, post, prepared_run, report, row_now, rows
from tests.support import async_wait_for
from tests.support.scenario import Scenario

scene = single.scene
retried_run = single.retried_run

GRACE = 60.0


@dataclass
class Routes:
    """The single and the batch callback route on a real HTTP server, with a grace of their
    own, and the runs their hook was told about."""

    base: str
    applied: list[ExecutionId] = field(default_factory=list)

    async def single(
        self, run: int, token: str = TOKEN, **fields: Any
    ) -> tuple[int, dict[str, Any]]:
        return await self._post(
            f"{self.base}/{run}", report(**fields), {"Authorization": f"Bearer {token}"}
        )

    def item(self, run: int, token: str = TOKEN, **fields: Any) -> dict[str, Any]:
        url = f"http://any-replica:8080/api/v1/callbacks/{run}"
        return {"callbackUrl": url, "token": token, **report(**fields)}

    async def batch(self, items: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
        status, body = await self._post(self.base, {"callbacks": items}, {})
        assert status == 200, body
        return [(a["status"], a["body"]) for a in body["results"]]

    async def _post(
        self, url: str, body: Any, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as session, session.post(
            url, json=body, headers=headers
        ) as resp:  # fmt: skip
            return resp.status, await resp.json()


async def serve(grace_seconds: float, engine: Engine) -> tuple[Routes, web.AppRunner]:
    port = free_port()
    served = Routes(f"http://127.0.0.1:{port}/api/v1/callbacks")
    app = web.Application()
    app.add_routes(callbacks.routes(engine, served.applied.append, grace_seconds=grace_seconds))
    app.add_routes(
        callback_batches.routes(engine, served.applied.append, grace_seconds=grace_seconds)
    )
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return served, runner


@pytest.fixture
async def routes(engine: Engine) -> AsyncIterator[Routes]:
    served, runner = await serve(GRACE, engine)
    yield served
    await runner.cleanup()


def age(engine: Engine, run: ExecutionId, seconds: float) -> None:
    """Make the run's row look as if it took its present state ``seconds`` ago."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE task_executions"
                " SET updated_at = UTC_TIMESTAMP(3) - INTERVAL :ms * 1000 MICROSECOND"
                " WHERE id = :id"
            ),
            {"ms": int(seconds * 1000), "id": run},
        )


def stored(engine: Engine, run: ExecutionId) -> tuple[Any, ...]:
    """Everything a callback could change: the run, its attempts, and the change log."""
    with engine.connect() as conn:
        changes = conn.execute(select(func.count()).select_from(schema.run_changes)).scalar()
    return (*rows(engine, run), changes)


async def test_a_duplicate_is_acknowledged_within_the_grace_and_refused_410_after_it(
    routes: Routes, engine: Engine
) -> None:
    run = prepared_run(engine, RunStatus.RUNNING)
    assert await routes.single(run) == (200, {"applied": True, "status": "succeeded"})
    assert await routes.single(run) == (200, {"applied": False, "status": "succeeded"})
    age(engine, run, GRACE - 10)
    assert await routes.single(run) == (200, {"applied": False, "status": "succeeded"})
    assert routes.applied == [run] * 3

    age(engine, run, GRACE + 1)
    before = stored(engine, run)

    for late in ({}, {"status": "failed", "error": "late"}, {"result": {"forged": True}}):
        status, body = await routes.single(run, **late)
        assert status == 410, (late, body)
        assert "no longer work" in body["error"] and f"{GRACE:g} s" in body["error"], body
    # A wrong token learns nothing of the run's age: it is still the 403 it always was.
    assert (await routes.single(run, token="forged"))[0] == 403
    assert stored(engine, run) == before
    assert routes.applied == [run] * 3, "a refused callback tells the leader nothing"


async def test_the_grace_runs_out_on_its_own(engine: Engine) -> None:
    grace = 2.0
    served, runner = await serve(grace, engine)
    try:
        run = prepared_run(engine, RunStatus.RUNNING)
        assert (await served.single(run))[0] == 200
        before = stored(engine, run)

        async def refused() -> bool:
            return (await served.single(run))[0] == 410

        await async_wait_for(refused, 20 * grace, "the run's token to stop working")
        assert stored(engine, run) == before
    finally:
        await runner.cleanup()


async def test_a_batch_refuses_each_expired_item_alone(routes: Routes, engine: Engine) -> None:
    fresh = prepared_run(engine, RunStatus.RUNNING)
    over = prepared_run(engine, RunStatus.RUNNING)
    assert await routes.batch([routes.item(over, result={"n": 1})]) == [
        (200, {"applied": True, "status": "succeeded"})
    ]
    age(engine, over, GRACE + 1)
    # A run given up as lost long ago: its pod's real result comes too late to correct it.
    lost = prepared_run(engine, RunStatus.LOST)
    age(engine, lost, GRACE + 1)
    # A run waiting for its retry is not over, however long ago its row last changed.
    waiting = prepared_run(
        engine, RunStatus.QUEUED, retry={"maxAttempts": 3, "backoffSeconds": 600}
    )
    age(engine, waiting, 10 * GRACE)
    before = {run: stored(engine, run)[:2] for run in (over, lost, waiting)}
    routes.applied.clear()

    answers = await routes.batch(
        [
            routes.item(over, result={"n": 1}),  # a duplicate of the report that ended it
            routes.item(fresh, result={"n": 2}),
            routes.item(lost, result={"late": True}),
            routes.item(over, token="forged"),
            routes.item(waiting, status="failed", error="handler answered HTTP 500"),
            routes.item(over, status="failed", error="late"),
        ]
    )

    assert [status for status, _ in answers] == [410, 200, 410, 403, 200, 410]
    assert all("no longer work" in answers[i][1]["error"] for i in (0, 2, 5))
    assert answers[1][1] == {"applied": True, "status": "succeeded"}
    assert answers[4][1] == {"applied": False, "status": "queued"}
    assert {run: stored(engine, run)[:2] for run in (over, lost, waiting)} == before
    row, _ = rows(engine, fresh)
    assert (row["status"], row["result"]) == ("succeeded", {"n": 2})
    assert routes.applied == [fresh, waiting]


# -- against a replica ------------------------------------------------------------------------


def test_a_replica_refuses_the_tokens_of_a_run_over_for_longer_than_the_grace(
    scene: Scenario, retried_run: dict[str, Any]
) -> None:
    run = retried_run["id"]
    single.plant(scene, run, 2, "second-attempt")
    replica = scene.replicas.members[0]
    url = f"{replica.url}/api/v1/callbacks/{run}"
    duplicate = report(status="succeeded", attempt=2, result=json.loads(retried_run["result"]))
    # Within the (default, 300 s) grace: acknowledged, as before.
    assert post(url, duplicate, token="second-attempt") == (
        200,
        {"applied": False, "status": "succeeded"},
    )
    scene.sql(
        "UPDATE task_executions SET updated_at = UTC_TIMESTAMP(3) - INTERVAL 1 HOUR WHERE id = %s",
        run,
    )
    before = row_now(scene, run)
    tried = scene.attempts(run)
    changes = scene.sql("SELECT COUNT(*) AS n FROM run_changes")

    status, body = post(url, duplicate, token="second-attempt")
    assert status == 410 and "no longer work" in body["error"], body
    late = report(status="failed", attempt=2, error="late")
    assert post(url, late, token="second-attempt")[0] == 410
    item = {"callbackUrl": url, "token": "second-attempt", **duplicate}
    status, body = post(f"{replica.url}/api/v1/callbacks", {"callbacks": [item]})
    assert status == 200 and [r["status"] for r in body["results"]] == [410], body

    assert row_now(scene, run) == before
    assert scene.attempts(run) == tried
    assert scene.sql("SELECT COUNT(*) AS n FROM run_changes") == changes

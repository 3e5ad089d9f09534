"""``POST /api/v1/callbacks/{id}`` on a running replica: it trusts only the attempt's token, names
the field a malformed report got wrong, and never moves a finished run backwards.

Tokens are never stored in clear, so a test cannot read one. Where a test must speak for a
sidecar it *plants* a token: it writes the sha256 of a token it chose into the attempt's row, as
the leader does at dispatch, then calls back with that token.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from cadenza.api import callback_batches, callbacks
from cadenza.core.ids import ExecutionId
from cadenza.core.transitions import TERMINAL, RunStatus
from cadenza.devenv.controlplane import ControlPlane
from cadenza.store import engine as engines
from cadenza.store import migrations, schema
from cadenza.store import runs as store_runs
from tests.scheduling.test_load_balancing_e2e import EVERY_SECOND, private_addresses, wait_healthy
from tests.support import db, wait_for
from tests.support import scenario as scenario_module
from tests.support.scenario import Scenario, executor, scenario, task

TOKEN = "the-callback-token"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def report(status: str = "succeeded", attempt: int = 1, **fields: Any) -> dict[str, Any]:
    """A callback body exactly as a sidecar sends it."""
    return {
        "executionId": f"x-{attempt}", "status": status, "attempt": attempt, "pod": "pool-0",
        "startedAt": "2030-01-01T00:00:00.000Z", "finishedAt": "2030-01-01T00:00:01.000Z",
        "result": {"ok": True}, "error": None, "exitCode": None, **fields,
    }  # fmt: skip


# -- over HTTP, against a replica -------------------------------------------------------------


@pytest.fixture
def scene(
    controlplane: ControlPlane,
    database: str,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    crds: None,
) -> Iterator[Scenario]:
    monkeypatch.setattr(scenario_module, "_addresses", private_addresses())
    with scenario(controlplane, database, namespace, tmp_path) as s:
        yield s


@pytest.fixture
def retried_run(scene: Scenario) -> dict[str, Any]:
    """A real run that failed its first attempt and succeeded on the second; nothing fires after
    it (the Task is suspended), so its row only changes if a callback changes it."""
    scene.add_pods("pool", 1)
    scene.apply(executor("pool"))
    wait_healthy(scene, 1)
    scene.apply(
        task(
            "cb", EVERY_SECOND, handler="flaky", payload={"failures": 1},
            retry={"maxAttempts": 2, "backoffSeconds": 1, "jitterPercent": 0},
        )
    )  # fmt: skip
    done = wait_for(
        lambda: [r for r in scene.runs("cb") if r["status"] == "succeeded"], 20, "a retried run"
    )
    scene.plane.kubectl(
        "patch", "task", "cb", "-n", scene.namespace, "--type=merge",
        "-p", json.dumps({"spec": {"suspend": True}}),
    )  # fmt: skip
    # Runs claimed ahead of their ticks before the suspend reached the leader end (or are
    # withdrawn) just after it: wait for them, so that nothing but a test's callback changes
    # a run from here on.
    over = {status.value for status in TERMINAL}
    wait_for(lambda: all(r["status"] in over for r in scene.runs("cb")), 30, "every run of cb over")
    row = done[0]
    assert row["attempt"] == 2 and [a["status"] for a in scene.attempts(row["id"])] == [
        "failed",
        "succeeded",
    ]
    return row


def post(url: str, body: bytes | Any, token: str | None = None) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, dict(json.load(resp))
    except urllib.error.HTTPError as exc:
        return exc.code, dict(json.load(exc))


def row_now(scene: Scenario, run: int) -> dict[str, Any]:
    (row,) = scene.sql("SELECT * FROM task_executions WHERE id = %s", run)
    return row


def plant(scene: Scenario, run: int, attempt: int, token: str) -> None:
    scene.sql(
        "UPDATE execution_attempts SET callback_token_hash = %s"
        " WHERE execution_id = %s AND attempt = %s",
        sha256(token), run, attempt,
    )  # fmt: skip


MALFORMED: list[tuple[str, bytes | Any, str]] = [
    ("not JSON", b"{status: succeeded", "body"),
    ("an array", [report()], "body"),
    ("a string", "succeeded", "body"),
    ("missing status", {k: v for k, v in report().items() if k != "status"}, "status"),
    ("unknown status", report(status="done"), "status"),
    ("running is no result", report(status="running"), "status"),
    ("missing attempt", {k: v for k, v in report().items() if k != "attempt"}, "attempt"),
    ("attempt 0", report(attempt=0), "attempt"),
    ('attempt "1"', {**report(), "attempt": "1"}, "attempt"),
    ("attempt true", {**report(), "attempt": True}, "attempt"),
    ('exitCode "x"', report(exitCode="x"), "exitCode"),
    ("exitCode 1.5", report(exitCode=1.5), "exitCode"),
    ("error not a string", report(error=["boom"]), "error"),
    ("startedAt not a time", report(startedAt="yesterday"), "startedAt"),
    ("finishedAt without a zone", report(finishedAt="2030-01-01T00:00:01"), "finishedAt"),
]


def test_callbacks_refuse_what_they_cannot_trust(
    scene: Scenario, retried_run: dict[str, Any]
) -> None:
    run = retried_run["id"]
    before = row_now(scene, run)
    tried = scene.attempts(run)
    replicas = scene.replicas.members
    url = f"{replicas[0].url}/api/v1/callbacks/{run}"

    # Unauthenticated: no header, or not a bearer token.
    assert post(url, report(attempt=2))[0] == 401
    status, body = post(url, report(attempt=2), token="")
    assert status == 401 and "Bearer" in body["error"], body
    # A forged token, for the current attempt and for the previous one.
    for attempt in (1, 2):
        status, body = post(url, report(status="failed", attempt=attempt), token="forged")
        assert status == 403 and "token" in body["error"], body
    # Unknown runs.
    base = f"{replicas[0].url}/api/v1/callbacks"
    assert post(f"{base}/{run + 1000}", report(), token="forged")[0] == 404
    assert post(f"{base}/not-a-run", report(), token="forged")[0] == 404
    # Malformed reports, each named by its field.
    for what, bad, field in MALFORMED:
        status, body = post(url, bad, token="forged")
        assert status == 400, (what, status, body)
        assert body.get("field") == field and field in body["error"], (what, body)

    assert row_now(scene, run) == before
    assert scene.attempts(run) == tried


def test_stale_duplicate_and_late_callbacks_change_nothing(
    scene: Scenario, retried_run: dict[str, Any]
) -> None:
    run = retried_run["id"]
    plant(scene, run, 1, "first-attempt")
    plant(scene, run, 2, "second-attempt")
    before = row_now(scene, run)
    tried = scene.attempts(run)
    # Any replica takes callbacks, not only the leader.
    scene.replicas.add("follower")
    scene.replicas.wait_indexed()
    leader = scene.replicas.wait_for_leader()
    follower = next(m for m in scene.replicas.members if m is not leader)
    url = f"{follower.url}/api/v1/callbacks/{run}"

    # The first attempt's report, long after the run moved on to its second.
    status, body = post(url, report(status="failed", attempt=1), token="first-attempt")
    assert status == 409 and "stale" in body["error"], body
    # A token is good for its own attempt only.
    status, _ = post(url, report(status="failed", attempt=2), token="first-attempt")
    assert status == 403
    # The second attempt's success again (a retried callback), then a late failure.
    again = report(status="succeeded", attempt=2, result=json.loads(before["result"]))
    for body_sent in (again, report(status="failed", attempt=2, error="late")):
        status, body = post(url, body_sent, token="second-attempt")
        assert (status, body) == (200, {"applied": False, "status": "succeeded"}), body

    assert row_now(scene, run) == before
    assert scene.attempts(run) == tried


# -- the guarded transition itself, on rows prepared in a scratch database --------------------


@pytest.fixture
def engine(database: str) -> Iterator[Engine]:
    eng = engines.create_engine(database, pool_size=2)
    migrations.migrate(eng)
    yield eng
    assert eng.pool.checkedout() == 0, "a test leaked a pooled connection"  # type: ignore[attr-defined]
    eng.dispose()


def prepared_run(
    engine: Engine, status: RunStatus, attempt: int = 1, retry: dict[str, Any] | None = None
) -> ExecutionId:
    """A run in ``status`` at ``attempt``, dispatched with ``TOKEN``, of a Task whose spec says
    ``retry``. ``lost`` is how the leader leaves a run it gave up on; ``queued`` how a callback
    leaves one whose attempt failed with a retry to come."""
    now = datetime.now(UTC)
    uid = str(uuid.uuid4())
    lost, queued = status is RunStatus.LOST, status is RunStatus.QUEUED
    with engine.begin() as conn:
        conn.execute(
            insert(schema.tasks).values(
                uid=uid, namespace="ns", name=f"t-{uid[:8]}", generation=1,
                cron_expression="* * * * * *", time_zone="UTC", suspend=False,
                execution_mode="Parallel", load_balance_strategy="RoundRobin", handler="echo",
                timeout_seconds=30, spec={"retry": retry or {"maxAttempts": 1}},
                spec_hash=sha256(uid), valid=True, missing_executors=[],
                created_at=now, updated_at=now,
            )
        )  # fmt: skip
        run = conn.execute(
            insert(schema.task_executions).values(
                task_uid=uid, namespace="ns", task_name=f"t-{uid[:8]}", origin="schedule",
                scheduled_at=now, requested_at=now, status=status.value, attempt=attempt,
                max_attempts=(retry or {}).get("maxAttempts", 1), epoch=1,
                executor_name="pool", pod_name="pool-0", pod_ip="127.0.0.9",
                callback_token_hash=None if queued else sha256(TOKEN),
                deadline_at=now + timedelta(seconds=30), dispatched_at=now,
                created_at=now, updated_at=now,
                finished_at=now if lost else None,
                next_attempt_at=now + timedelta(seconds=60) if queued else None,
                error="no result from pod pool-0 by the deadline" if lost else
                "handler answered HTTP 500" if queued else None,
            )
        ).lastrowid  # fmt: skip
        conn.execute(
            insert(schema.execution_attempts).values(
                execution_id=run, attempt=attempt, executor_name="pool", pod_name="pool-0",
                pod_ip="127.0.0.9", callback_token_hash=sha256(TOKEN),
                status="failed" if queued else status.value, dispatched_at=now,
            )
        )  # fmt: skip
    return ExecutionId(int(run))


def outcome(status: RunStatus, **fields: Any) -> callbacks.Report:
    return callbacks.Report(
        attempt=int(fields.pop("attempt", 1)), outcome=store_runs.Outcome(status=status, **fields)
    )


def rows(engine: Engine, run: ExecutionId) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with engine.connect() as conn:
        row = conn.execute(
            select(schema.task_executions).where(schema.task_executions.c.id == run)
        ).one()
        return dict(row._mapping), store_runs.attempts(conn, run)


def test_a_duplicate_success_is_acknowledged_and_changes_nothing(engine: Engine) -> None:
    run = prepared_run(engine, RunStatus.RUNNING)
    success = outcome(RunStatus.SUCCEEDED, result={"n": 1})

    first = callbacks.apply(engine, run, TOKEN, success)
    after_first = rows(engine, run)
    second = callbacks.apply(engine, run, TOKEN, success)

    assert first == {"applied": True, "status": "succeeded"}
    assert second == {"applied": False, "status": "succeeded"}
    assert rows(engine, run) == after_first
    row, (only,) = after_first
    assert row["result"] == {"n": 1} and only["status"] == "succeeded"


def test_a_late_failure_never_moves_a_succeeded_run_backwards(engine: Engine) -> None:
    run = prepared_run(engine, RunStatus.RUNNING, retry={"maxAttempts": 3})
    callbacks.apply(engine, run, TOKEN, outcome(RunStatus.SUCCEEDED, result="ok"))
    settled = rows(engine, run)

    for late in (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED):
        answer = callbacks.apply(engine, run, TOKEN, outcome(late, error="late"))
        assert answer == {"applied": False, "status": "succeeded"}, late
    assert rows(engine, run) == settled


def test_the_real_result_corrects_a_lost_run(engine: Engine) -> None:
    run = prepared_run(engine, RunStatus.LOST)
    started = datetime(2030, 1, 1, 0, 0, 0, tzinfo=UTC)

    answer = callbacks.apply(
        engine, run, TOKEN,
        outcome(RunStatus.SUCCEEDED, result=[1, 2], started_at=started,
                finished_at=started + timedelta(seconds=2)),
    )  # fmt: skip

    assert answer == {"applied": True, "status": "succeeded"}
    row, (only,) = rows(engine, run)
    assert row["status"] == "succeeded" and row["result"] == [1, 2] and row["error"] is None
    assert row["started_at"] == started and row["finished_at"] == started + timedelta(seconds=2)
    assert only["status"] == "succeeded" and only["error"] is None
    # Corrected once: a second, different report changes nothing.
    corrected = rows(engine, run)
    late = callbacks.apply(engine, run, TOKEN, outcome(RunStatus.FAILED, error="late"))
    assert late == {"applied": False, "status": "succeeded"}
    assert rows(engine, run) == corrected


def test_a_late_failure_of_a_lost_run_is_recorded_not_retried(engine: Engine) -> None:
    # The Task allows more attempts now than when the leader gave the run up: the real result
    # corrects history, it does not reopen a run the leader no longer tracks.
    run = prepared_run(engine, RunStatus.LOST, retry={"maxAttempts": 3, "backoffSeconds": 1})

    answer = callbacks.apply(engine, run, TOKEN, outcome(RunStatus.FAILED, error="exit 1"))

    assert answer == {"applied": True, "status": "failed"}
    row, (only,) = rows(engine, run)
    assert row["status"] == "failed" and row["error"] == "exit 1"
    assert row["next_attempt_at"] is None and only["status"] == "failed"


def test_a_duplicate_of_the_report_that_queued_a_retry_changes_nothing(engine: Engine) -> None:
    run = prepared_run(engine, RunStatus.QUEUED, retry={"maxAttempts": 3, "backoffSeconds": 60})
    before = rows(engine, run)

    again = callbacks.apply(
        engine, run, TOKEN, outcome(RunStatus.FAILED, error="handler answered HTTP 500")
    )

    assert again == {"applied": False, "status": "queued"}
    assert rows(engine, run) == before


def test_the_token_and_attempt_guard_the_function_too(engine: Engine) -> None:
    run = prepared_run(engine, RunStatus.RUNNING, attempt=2, retry={"maxAttempts": 2})
    before = rows(engine, run)

    with pytest.raises(callbacks.CallbackError) as forged:
        callbacks.apply(engine, run, "forged", outcome(RunStatus.SUCCEEDED, attempt=2))
    with pytest.raises(callbacks.CallbackError) as other_attempt:
        callbacks.apply(engine, run, TOKEN, outcome(RunStatus.SUCCEEDED, attempt=1))
    with pytest.raises(callbacks.CallbackError) as unknown:
        callbacks.apply(engine, ExecutionId(run + 1000), TOKEN, outcome(RunStatus.SUCCEEDED))

    assert (forged.value.status, other_attempt.value.status, unknown.value.status) == (
        403,
        403,
        404,
    )
    assert rows(engine, run) == before


def test_an_oversized_error_and_result_are_stored_cut_never_refused(engine: Engine) -> None:
    """A pod's 100 KiB error would not fit the ``TEXT`` column and its 2 MiB result is more than
    history keeps: the write used to fail (500, the sidecar re-sending it forever). Both are
    stored cut, saying so, and the run ends as the pod said."""
    run = prepared_run(engine, RunStatus.RUNNING)
    huge = "é" * 50_000 + "the end"  # 100 KiB of UTF-8
    big = {"rows": ["x" * 1000] * 2100}
    answer = callbacks.apply(
        engine, run, TOKEN, outcome(RunStatus.FAILED, error=huge, result=big, exit_code=2**40)
    )
    assert answer == {"applied": True, "status": "failed"}
    row, _ = rows(engine, run)
    assert row["status"] == "failed" and row["exit_code"] is None
    assert len(row["error"].encode()) <= 16_384 and row["error"].startswith("é" * 100)
    assert "100007 bytes in all, cut to fit" in row["error"]
    assert row["result"]["truncated"] is True and row["result"]["bytes"] > 2_000_000
    assert row["result"]["preview"].startswith('{"rows":["xxx')


def _hold_rows(database: str, runs: list[ExecutionId]) -> Any:
    """A transaction of the test's own holding the runs' rows locked, as a slow writer would."""
    holder = db.connect(database, autocommit=False)
    with holder.cursor() as cur:
        marks = ",".join(["%s"] * len(runs))
        cur.execute(f"SELECT id FROM task_executions WHERE id IN ({marks}) FOR UPDATE", runs)
    return holder


def test_a_forged_token_is_refused_without_waiting_for_the_runs_lock(
    engine: Engine, database: str
) -> None:
    run = prepared_run(engine, RunStatus.RUNNING)
    holder = _hold_rows(database, [run])
    try:
        answers: list[Any] = []

        def forge() -> None:
            try:
                callbacks.apply(engine, run, "not-the-token", outcome(RunStatus.SUCCEEDED))
            except callbacks.CallbackError as exc:
                answers.append(exc.status)

        caller = threading.Thread(target=forge)
        caller.start()
        caller.join(10)  # the lock is held for as long as the test wants: no waiting for it
        assert not caller.is_alive(), "a forged callback waited for the run's lock"
        assert answers == [403]
    finally:
        holder.rollback()
        holder.close()
    assert rows(engine, run)[0]["status"] == "running"


async def test_callbacks_take_at_most_their_gate_of_the_pool(engine: Engine, database: str) -> None:
    """Eight callbacks wait on locked rows: only the gate's two hold a pooled connection (and a
    thread); the others wait without either, and all are applied once the rows are free."""
    runs = [prepared_run(engine, RunStatus.RUNNING) for _ in range(8)]
    roomy = engines.create_engine(database, pool_size=10)  # the pool alone would let all in
    app = web.Application()
    gate = asyncio.Semaphore(2)
    app.add_routes(callbacks.routes(roomy, lambda run: None, gate=gate))
    holder = _hold_rows(database, runs)
    async with TestServer(app) as server, ClientSession() as session:

        async def call(run: ExecutionId) -> int:
            async with session.post(
                server.make_url(f"/api/v1/callbacks/{run}"),
                json=report(),
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as resp:
                return resp.status

        calls = [asyncio.create_task(call(run)) for run in runs]
        for _ in range(100):  # until both of the gate's places are taken
            if gate.locked():
                break
            await asyncio.sleep(0.05)
        assert gate.locked()
        await asyncio.sleep(0.5)  # room for any call the gate failed to hold back
        assert roomy.pool.checkedout() <= 2  # type: ignore[attr-defined]
        await asyncio.to_thread(holder.rollback)
        holder.close()
        assert await asyncio.gather(*calls) == [200] * 8
    roomy.dispose()
    assert all(rows(engine, run)[0]["status"] == "succeeded" for run in runs)


def _raw_post(host: str, port: int, path: str, headers: bytes, body: bytes) -> int:
    """A request written byte by byte, headers no client library would send."""
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(
            b"POST %s HTTP/1.1\r\nHost: test\r\n%sContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (path.encode(), headers, len(body), body)
        )
        status_line = conn.makefile("rb").readline()
    return int(status_line.split()[1])


@pytest.mark.parametrize(
    "header",
    [
        b"Authorization: Bearer \xff\xfe\x80token\r\n",
        b"Authorization: Bearer \xc3\xa9t\xc3\xa9\r\n",
        b"Authorization: \xff\r\n",
        b"Authorization: Bearer " + b"a" * 7000 + b"\r\n",
        b"",
    ],
    ids=["invalid-utf8", "non-ascii", "no-scheme", "long", "missing"],
)
async def test_odd_authorization_headers_are_refused_never_500(
    engine: Engine, header: bytes
) -> None:
    run = prepared_run(engine, RunStatus.RUNNING)
    app = web.Application()
    app.add_routes(callbacks.routes(engine, lambda run: None))
    app.add_routes(callback_batches.routes(engine, lambda run: None))
    body = json.dumps(report()).encode()
    item = {**report(), "callbackUrl": f"http://x/api/v1/callbacks/{run}", "token": "x\ud800y"}
    batch = json.dumps({"callbacks": [item]}).encode()
    async with TestServer(app) as server:
        where = (server.host, server.port)
        single = await asyncio.to_thread(
            _raw_post, *where, f"/api/v1/callbacks/{run}", header, body
        )
        batched = await asyncio.to_thread(
            _raw_post, *where, callback_batches.BATCH_PATH, header, batch
        )
    assert single in (401, 403), single
    assert batched == 200  # each item answers for itself (403: its token is not the run's)
    assert rows(engine, run)[0]["status"] == "running"


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


async def test_bodies_of_any_shape_or_depth_are_400_or_stored_never_500(engine: Engine) -> None:
    """JSON nested past the decoder's recursion limit or holding NaN is a 400; a result nested
    32 deep (valid JSON, but more than MariaDB's JSON columns take) is stored as a note."""
    run = prepared_run(engine, RunStatus.RUNNING)
    app = web.Application()
    app.add_routes(callbacks.routes(engine, lambda run: None))
    app.add_routes(callback_batches.routes(engine, lambda run: None))
    auth = b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
    single, batch = f"/api/v1/callbacks/{run}", callback_batches.BATCH_PATH
    deep = b"[" * 200_000 + b"]" * 200_000
    with_nan = json.dumps(report(result=float("nan"))).encode()
    async with TestServer(app) as server:
        where = (server.host, server.port)

        async def post(path: str, body: bytes) -> int:
            return await asyncio.to_thread(_raw_post, *where, path, auth, body)

        assert await post(single, deep) == 400
        assert await post(batch, deep) == 400
        assert await post(single, with_nan) == 400
        assert rows(engine, run)[0]["status"] == "running"
        assert await post(single, json.dumps(report(result=_nested(32))).encode()) == 200
    stored = rows(engine, run)[0]
    assert stored["status"] == "succeeded"
    assert stored["result"]["reason"] == "nests deeper than 31 levels"


def test_a_scheduled_runs_first_start_is_told_once_after_the_commit(engine: Engine) -> None:
    """How late a run began, from its tick to the ``startedAt`` its result carries: told once
    per run (not for a duplicate), only for a first attempt, and not for a refused report."""
    run = prepared_run(engine, RunStatus.RUNNING)
    tick = rows(engine, run)[0]["scheduled_at"].replace(tzinfo=UTC)
    told: list[float] = []
    success = outcome(RunStatus.SUCCEEDED, started_at=tick + timedelta(seconds=2.5))

    callbacks.apply(engine, run, TOKEN, success, on_started=told.append)
    callbacks.apply(engine, run, TOKEN, success, on_started=told.append)
    assert told == [2.5]

    second = prepared_run(engine, RunStatus.RUNNING, attempt=2, retry={"maxAttempts": 2})
    callbacks.apply(engine, second, TOKEN, outcome(RunStatus.SUCCEEDED, attempt=2,
                    started_at=tick + timedelta(seconds=9)), on_started=told.append)  # fmt: skip
    with pytest.raises(callbacks.CallbackError):
        callbacks.apply(engine, second, "forged", success, on_started=told.append)
    assert told == [2.5]

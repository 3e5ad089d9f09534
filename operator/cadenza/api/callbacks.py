"""``POST /api/v1/callbacks/{id}``: a sidecar reports how an attempt ended. Any replica accepts.

Authentication is the per-attempt token the leader gave with the dispatch (only its sha256 is
stored). The result is applied as a guarded state transition: a duplicate or late callback never
moves a finished run backwards, and answers 200 so the sidecar stops re-sending it.

Answers (the sidecar treats 403/404/409/410 as final and retries anything else):
- 200 applied, or already applied (idempotent);
- 400 malformed body, naming the field; 401 no bearer token;
- 403 the token is not this attempt's; 404 no such run;
- 409 the attempt is not the run's current one (a late report of an attempt already retried).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from cadenza.core import retry as retry_
from cadenza.core import runs as rules
from cadenza.core.ids import ExecutionId
from cadenza.core.transitions import RESULTS, RunStatus
from cadenza.scheduling.plans import retry_policy
from cadenza.store import deadlocks, schema
from cadenza.store import runs as store_runs

Applied = Callable[[ExecutionId], None]
_rng = random.Random()


class CallbackError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


@dataclass(frozen=True)
class Report:
    attempt: int
    outcome: store_runs.Outcome


def routes(engine: Engine, on_applied: Applied) -> list[web.RouteDef]:
    async def callback(request: web.Request) -> web.Response:
        try:
            run = run_id(request.match_info["id"])
            token = _bearer(request)
            report = _report(await request.read())
            answer = await asyncio.to_thread(
                deadlocks.retry_deadlocks, lambda: apply(engine, run, token, report)
            )
        except CallbackError as exc:
            body: dict[str, Any] = {"error": exc.message}
            if exc.field:
                body["field"] = exc.field
            return web.json_response(body, status=exc.status)
        on_applied(run)
        return web.json_response(answer)

    return [web.post("/api/v1/callbacks/{id}", callback)]


def apply(engine: Engine, run: ExecutionId, token: str, report: Report) -> dict[str, Any]:
    """Check the token and apply the report in a transaction of its own; the answer's body (or a
    CallbackError)."""
    with engine.begin() as conn:
        return apply_in(conn, run, token, report)


def apply_in(conn: Connection, run: ExecutionId, token: str, report: Report) -> dict[str, Any]:
    """``apply`` inside the caller's transaction (the batch route applies many in one)."""
    current = store_runs.lock_for_report(conn, run, report.attempt)
    if current is None:
        raise CallbackError(404, f"no run {run}")
    offered = hashlib.sha256(token.encode()).hexdigest()
    if current.token_hash is None or not hmac.compare_digest(current.token_hash, offered):
        raise CallbackError(403, "the token is not this run's callback token")
    if report.attempt != current.attempt:
        raise CallbackError(
            409, f"attempt {report.attempt} is stale: the run is at attempt {current.attempt}"
        )
    # Only a bad outcome needs the Task's retry policy: most reports never read the spec.
    policy = retry_.NO_RETRY
    if report.outcome.status in (RunStatus.FAILED, RunStatus.TIMED_OUT):
        spec = conn.execute(
            select(schema.tasks.c.spec).where(schema.tasks.c.uid == current.task)
        ).scalar_one_or_none()
        policy = retry_policy(spec) if isinstance(spec, dict) else retry_.NO_RETRY
    decision = rules.after_report(
        current.status, report.outcome, policy, report.attempt, datetime.now(UTC), _rng
    )
    # Each applied change is noted in the change log, which the leader reads with a cursor:
    # that is how it learns of results that reached another replica.
    if isinstance(decision, rules.Retry):
        if store_runs.schedule_retry(conn, run, report.attempt, decision.outcome, decision.at):
            store_runs.note_change(conn, run)
            queued = RunStatus.QUEUED.value
            return {"applied": True, "status": queued, "retryAt": decision.at.isoformat()}
    elif decision is not None and store_runs.finish(conn, run, report.attempt, decision.outcome):
        store_runs.note_change(conn, run)
        return {"applied": True, "status": report.outcome.status.value}
    # A duplicate or late report, or the guarded update matched no row: the attempt was
    # already closed and the run queued for its next one. Nothing changed.
    return {"applied": False, "status": current.status.value}


def run_id(raw: str) -> ExecutionId:
    """The run a callback URL's last path segment names (404 when it names none)."""
    if not raw.isdigit():
        raise CallbackError(404, f"no run {raw!r}")
    return ExecutionId(int(raw))


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise CallbackError(401, "missing bearer token: send Authorization: Bearer <callbackToken>")
    return token.strip()


def _report(raw: bytes) -> Report:
    try:
        body = json.loads(raw)
    except ValueError:
        raise CallbackError(400, "the body is not JSON", "body") from None
    if not isinstance(body, dict):
        raise CallbackError(400, "the body must be a JSON object", "body")
    return report_from(body)


def report_from(body: dict[str, Any]) -> Report:
    """The report in one decoded callback body (a single callback's, or a batch item's)."""
    raw_status = body.get("status")
    status = RunStatus(raw_status) if raw_status in {s.value for s in RESULTS} else None
    if status is None:
        raise CallbackError(
            400, "status must be one of succeeded, failed, timed_out, cancelled", "status"
        )
    attempt = body.get("attempt")
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
        raise CallbackError(400, "attempt must be an integer of at least 1", "attempt")
    error, exit_code = body.get("error"), body.get("exitCode")
    if error is not None and not isinstance(error, str):
        raise CallbackError(400, "error must be a string or null", "error")
    if exit_code is not None and (not isinstance(exit_code, int) or isinstance(exit_code, bool)):
        raise CallbackError(400, "exitCode must be an integer or null", "exitCode")
    return Report(
        attempt=attempt,
        outcome=store_runs.Outcome(
            status=status,
            error=error,
            result=body.get("result"),
            exit_code=exit_code,
            started_at=_time(body.get("startedAt"), "startedAt"),
            finished_at=_time(body.get("finishedAt"), "finishedAt"),
        ),
    )


def _time(value: Any, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise CallbackError(400, f"{field} must be an RFC 3339 time", field) from None
    if moment.tzinfo is None:
        raise CallbackError(400, f"{field} must carry a time zone", field)
    return moment

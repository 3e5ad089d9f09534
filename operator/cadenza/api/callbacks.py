"""``POST /api/v1/callbacks/{id}``: a sidecar reports how an attempt ended. Any replica accepts.

Authentication is the per-attempt token the leader gave with the dispatch (only its sha256 is
stored). The result is applied as a guarded state transition: a duplicate or late callback never
moves a finished run backwards, and answers 200 so the sidecar stops re-sending it.

Invariant: a run's tokens stop working ``grace_seconds`` (``CADENZA_CALLBACK_GRACE_SECONDS``)
after the run is over, by the database's clock (see :mod:`cadenza.store.reports`): a callback
with one is refused 410 and changes nothing. A wrong token still gets 403, whatever the run's age.

Answers (the sidecar treats 403/404/409/410 as final and retries anything else):
- 200 applied, or already applied (idempotent);
- 400 malformed body, naming the field; 401 no bearer token; 413 a body above ``MAX_BYTES``;
- 403 the token is not this attempt's; 404 no such run;
- 409 the attempt is not the run's current one (a late report of an attempt already retried);
- 410 the run has been over for longer than the grace: its tokens no longer work.
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
from cadenza.core.ids import ExecutionId, TaskUid
from cadenza.core.transitions import RESULTS, RunStatus
from cadenza.scheduling.plans import retry_policy
from cadenza.settings import ApiSettings
from cadenza.store import deadlocks, reports, schema
from cadenza.store import runs as store_runs

Applied = Callable[[ExecutionId], None]
Started = Callable[[float], None]
"""Told, after the commit, how many seconds after its tick a scheduled run began (the first
attempt's ``startedAt``, reported with its result)."""

DEFAULT_GRACE_SECONDS = ApiSettings.callback_grace_seconds
DEFAULT_CONCURRENCY = 4
"""Callback transactions at once, when the caller does not share a gate of its own."""
MAX_BYTES = 1024 * 1024
"""Largest single callback body (a sidecar fits a result into far less)."""
_CHUNK = 65536
_rng = random.Random()


def unobserved(seconds: float) -> None:
    """The ``Started`` of a caller that does not observe start delays."""


class CallbackError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


@dataclass(frozen=True)
class Report:
    attempt: int
    outcome: store_runs.Outcome


def routes(
    engine: Engine,
    on_applied: Applied,
    *,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    gate: asyncio.Semaphore | None = None,
    on_started: Started = unobserved,
) -> list[web.RouteDef]:
    """The route; ``gate`` bounds how many callbacks use a thread and a pooled connection at
    once (shared with the batch route), so a storm of them leaves the rest to the leader."""
    gate = gate or asyncio.Semaphore(DEFAULT_CONCURRENCY)

    async def callback(request: web.Request) -> web.Response:
        try:
            run = run_id(request.match_info["id"])
            token = _bearer(request)
            report = _report(await read_body(request, MAX_BYTES, "the callback", "cut the result"))
            async with gate:
                answer = await asyncio.to_thread(
                    deadlocks.retry_deadlocks,
                    lambda: apply(engine, run, token, report, grace_seconds, on_started),
                )
        except CallbackError as exc:
            body: dict[str, Any] = {"error": exc.message}
            if exc.field:
                body["field"] = exc.field
            return web.json_response(body, status=exc.status)
        on_applied(run)
        return web.json_response(answer)

    return [web.post("/api/v1/callbacks/{id}", callback)]


def apply(
    engine: Engine,
    run: ExecutionId,
    token: str,
    report: Report,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    on_started: Started = unobserved,
) -> dict[str, Any]:
    """Check the token and apply the report in a transaction of its own; the answer's body (or a
    CallbackError)."""
    with engine.begin() as conn:
        reported = apply_many(conn, [(run, token, report)], grace_seconds)
    reported.tell(on_started)
    (answer,) = reported.answers
    if isinstance(answer, CallbackError):
        raise answer
    return answer


Item = tuple[ExecutionId, str, Report]


@dataclass(frozen=True)
class Reported:
    """What applying reports did: an answer's body or a CallbackError per report, in order, and
    how many seconds after its tick each scheduled run they ended had started."""

    answers: list[dict[str, Any] | CallbackError]
    start_delays: list[float]

    def tell(self, on_started: Started) -> None:
        """Pass the start delays on (once the transaction that applied them committed)."""
        for seconds in self.start_delays:
            on_started(seconds)


def apply_many(
    conn: Connection, items: list[Item], grace_seconds: float = DEFAULT_GRACE_SECONDS
) -> Reported:
    """Check and apply many reports inside the caller's transaction, in order (a duplicate
    after the report it repeats changes nothing).

    A report whose token is not its attempt's is refused (403) before any lock is taken, so a
    caller without a token cannot make real callbacks wait. The other runs are locked in one
    read (in id order, so two batches never wait on each other in a cycle) and written with a
    few statements whatever their number. A refused report (403, 404, 409, 410) writes nothing.
    """
    known = reports.token_hashes(conn, [run for run, _, _ in items])
    forged = {
        i
        for i, (run, token, report) in enumerate(items)
        if run in known and not _token_fits(known[run].get(report.attempt), token)
    }
    trusted = [run for i, (run, _, _) in enumerate(items) if i not in forged]
    locked = reports.lock_many_for_reports(conn, trusted) if trusted else {}
    policies = _retry_policies(conn, locked, items)
    now = datetime.now(UTC)
    answers: list[dict[str, Any] | CallbackError] = []
    delays: list[float] = []
    ends: list[tuple[ExecutionId, int, rules.Outcome, datetime | None]] = []
    for i, (run, token, report) in enumerate(items):
        current = locked.get(run)
        try:
            if i in forged:
                raise CallbackError(403, _FORGED)
            _check(run, current, token, report, grace_seconds)
        except CallbackError as exc:
            answers.append(exc)
            continue
        assert current is not None
        policy = policies.get(current.task, retry_.NO_RETRY)
        decision = rules.after_report(
            current.status, report.outcome, policy, report.attempt, now, _rng
        )
        if decision is None:
            # A duplicate or late report: the run is over, or already waits for its retry.
            answers.append({"applied": False, "status": current.status.value})
            continue
        started = report.outcome.started_at
        if current.tick is not None and report.attempt == 1 and started is not None:
            delays.append((started - current.tick).total_seconds())
            current.tick = None  # told once, whatever repeats the report in this batch
        if isinstance(decision, rules.Retry):
            ends.append((run, report.attempt, decision.outcome, decision.at))
            current.status = RunStatus.QUEUED
            queued = RunStatus.QUEUED.value
            answers.append({"applied": True, "status": queued, "retryAt": decision.at.isoformat()})
        else:
            ends.append((run, report.attempt, decision.outcome, None))
            current.status = decision.outcome.status
            answers.append({"applied": True, "status": decision.outcome.status.value})
    # Each change is noted in the change log, which the leader reads with a cursor: that is
    # how it learns of results that reached another replica.
    reports.end_many_checked(conn, ends)
    return Reported(answers, delays)


_FORGED = "the token is not this run's callback token"


def _token_fits(expected: str | None, token: str) -> bool:
    # A header or a JSON string may carry lone surrogates: such a token is simply wrong.
    offered = hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
    return expected is not None and hmac.compare_digest(expected, offered)


def _check(
    run: ExecutionId,
    current: reports.Locked | None,
    token: str,
    report: Report,
    grace_seconds: float,
) -> None:
    if current is None:
        raise CallbackError(404, f"no run {run}")
    if not _token_fits(current.token_hashes.get(report.attempt), token):
        raise CallbackError(403, _FORGED)
    if current.over_for is not None and current.over_for > grace_seconds:
        raise CallbackError(
            410,
            f"run {run} ended more than {grace_seconds:g} s ago"
            " (CADENZA_CALLBACK_GRACE_SECONDS): its callback tokens no longer work",
        )
    if report.attempt != current.attempt:
        raise CallbackError(
            409, f"attempt {report.attempt} is stale: the run is at attempt {current.attempt}"
        )


def _retry_policies(
    conn: Connection, locked: dict[ExecutionId, reports.Locked], items: list[Item]
) -> dict[TaskUid, retry_.RetryPolicy]:
    """The retry policies of the Tasks whose runs report a bad outcome (only those need one,
    so most batches read no spec at all)."""
    bad = (RunStatus.FAILED, RunStatus.TIMED_OUT)
    tasks = {locked[run].task for run, _, r in items if run in locked and r.outcome.status in bad}
    if not tasks:
        return {}
    rows = conn.execute(
        select(schema.tasks.c.uid, schema.tasks.c.spec).where(schema.tasks.c.uid.in_(tasks))
    )
    return {
        TaskUid(uid): retry_policy(spec) if isinstance(spec, dict) else retry_.NO_RETRY
        for uid, spec in rows
    }


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


async def read_body(request: web.Request, limit: int, what: str, fix: str) -> bytes:
    """The body; a 413 naming ``body`` past ``limit`` bytes, counted as it is read (a chunked
    body has no Content-Length)."""
    too_large = CallbackError(413, f"{what} is larger than {limit} bytes; {fix}", "body")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    data = bytearray()
    while chunk := await request.content.read(_CHUNK):
        data += chunk
        if len(data) > limit:
            raise too_large
    return bytes(data)


def _report(raw: bytes) -> Report:
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise CallbackError(400, "the body must be a JSON object", "body")
    return report_from(body)


def parse_json(raw: bytes) -> Any:
    """A callback body decoded; 400 naming ``body`` for anything that is not plain JSON (also
    NaN and Infinity, which no JSON column takes, and nesting too deep to decode)."""
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise CallbackError(400, "the body is not JSON (or nests too deeply)", "body") from None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


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

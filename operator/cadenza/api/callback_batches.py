"""``POST /api/v1/callbacks``: many sidecar reports in one request, applied in one transaction.

Every replica serves it beside the single ``POST /api/v1/callbacks/{id}`` (protocol version 2).
The body is ``{"callbacks": [item, ...]}``; an item is the single callback's body plus
``callbackUrl`` (the URL its single callback goes to: the last path segment names the run, the
host is not looked at since any replica serves any run) and ``token`` (the run's callback token,
which a single callback sends as its Bearer). The request itself carries no Authorization: each
item is authenticated by its own token.

The answer is ``200 {"results": [{"status": s, "body": b, "executionId": ...}, ...]}``, one per
item in order, ``s`` and ``b`` being what the single route answers for that report (200 applied
or already applied, 400 naming the field, 403, 404, 409, 410 for a run over for longer than the
grace). The batch as a whole is answered 400 naming ``body`` or ``callbacks`` when it is not
such a list or holds more than ``MAX_ITEMS``, 413 above ``MAX_BYTES``, and 5xx when the
database fails (the sidecar then retries it all).

Invariants:
- Each item is checked and applied by the single route's own code (``callbacks.run_id``,
  ``callbacks.report_from``, ``callbacks.apply_many``), so the two routes cannot disagree.
- All items are applied in ONE transaction, run again as a whole after a deadlock. An item is
  refused (403, 404, 409, 410) before it writes anything, so a refusal spoils no other item and
  needs no savepoint. (A savepoint would not survive a deadlock anyway: InnoDB rolls back the
  whole transaction, and rolling back to the savepoint then fails with another error than the
  deadlock, which the retry would not recognise.)
- Rows are locked in ascending run id order (items of one run in their input order, so a
  duplicate comes after the report it repeats and changes nothing), so two batches never wait on
  each other in a cycle.
- ``on_applied`` is called for every item answered 200, after the commit.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from sqlalchemy.engine import Engine

from cadenza.api import callbacks
from cadenza.api.callbacks import Applied, CallbackError, Report
from cadenza.core.ids import ExecutionId
from cadenza.store import deadlocks

BATCH_PATH = "/api/v1/callbacks"
MAX_ITEMS = 1000
"""Most items per batch; a sidecar sends at most 200 by default (``--callback-batch-max-items``)."""
MAX_BYTES = 32 * 1024 * 1024
"""Largest batch body; the app-wide 1 MiB of ``request.read()`` is too small for 200 results."""


@dataclass(frozen=True)
class _Item:
    index: int
    run: ExecutionId
    token: str
    report: Report


def routes(
    engine: Engine,
    on_applied: Applied,
    *,
    grace_seconds: float = callbacks.DEFAULT_GRACE_SECONDS,
    gate: asyncio.Semaphore | None = None,
    on_started: callbacks.Started = callbacks.unobserved,
) -> list[web.RouteDef]:
    """The route; ``gate`` and ``on_started`` as for the single route (share one gate)."""
    gate = gate or asyncio.Semaphore(callbacks.DEFAULT_CONCURRENCY)

    async def batch(request: web.Request) -> web.Response:
        try:
            body = await callbacks.read_body(request, MAX_BYTES, "the batch", "send fewer items")
            raw_items = parse_batch(body)
        except CallbackError as exc:
            return web.json_response(_error(exc), status=exc.status)
        items: list[_Item] = []
        answers: list[dict[str, Any]] = []
        for index, raw in enumerate(raw_items):
            try:
                items.append(parse_item(index, raw))
                answers.append({})  # filled in by the transaction
            except CallbackError as exc:
                answers.append({**_echo(raw), "status": exc.status, "body": _error(exc)})
        if items:
            async with gate:
                applied = await asyncio.to_thread(
                    deadlocks.retry_deadlocks,
                    lambda: apply_all(engine, items, grace_seconds, on_started),
                )
            for item, answer in zip(items, applied, strict=True):
                answers[item.index] = {**_echo(raw_items[item.index]), **answer}
                if answer["status"] == 200:
                    on_applied(item.run)
        return web.json_response({"results": answers})

    return [web.post(BATCH_PATH, batch)]


def parse_batch(raw: bytes) -> list[Any]:
    """The items of a ``{"callbacks": [...]}`` body, not yet checked one by one."""
    body = callbacks.parse_json(raw)
    if not isinstance(body, dict):
        raise CallbackError(400, 'the body must be a JSON object {"callbacks": [...]}', "body")
    items = body.get("callbacks")
    if not isinstance(items, list):
        raise CallbackError(400, "callbacks must be a list of callback bodies", "callbacks")
    if len(items) > MAX_ITEMS:
        raise CallbackError(
            400, f"callbacks holds {len(items)} items, at most {MAX_ITEMS} are allowed", "callbacks"
        )
    return items


def parse_item(index: int, raw: Any) -> _Item:
    """One item checked as the single route checks a callback: run (404), token, body (400)."""
    if not isinstance(raw, dict):
        where = f"callbacks[{index}]"
        raise CallbackError(400, f"{where} must be a JSON object", where)
    url = raw.get("callbackUrl")
    try:
        path = urllib.parse.urlsplit(url).path if isinstance(url, str) else ""
    except ValueError:
        path = ""
    if not path:
        raise CallbackError(400, "callbackUrl must be the run's callback URL", "callbackUrl")
    run = callbacks.run_id(urllib.parse.unquote(path.rstrip("/").rpartition("/")[2]))
    token = raw.get("token")
    if not isinstance(token, str) or not token.strip():
        raise CallbackError(400, "token must be the run's callback token", "token")
    return _Item(index, run, token.strip(), callbacks.report_from(raw))


def apply_all(
    engine: Engine,
    items: list[_Item],
    grace_seconds: float = callbacks.DEFAULT_GRACE_SECONDS,
    on_started: callbacks.Started = callbacks.unobserved,
) -> list[dict[str, Any]]:
    """Applies every item in one transaction; ``{"status", "body"}`` per item, in order."""
    answers: list[dict[str, Any]] = [{} for _ in items]
    # sorted() is stable: the items of one run keep their input order.
    order = sorted(range(len(items)), key=lambda position: items[position].run)
    with engine.begin() as conn:
        applied = callbacks.apply_many(
            conn,
            [(items[p].run, items[p].token, items[p].report) for p in order],
            grace_seconds,
        )
    applied.tell(on_started)
    for position, answer in zip(order, applied.answers, strict=True):
        if isinstance(answer, CallbackError):
            answers[position] = {"status": answer.status, "body": _error(answer)}
        else:
            answers[position] = {"status": 200, "body": answer}
    return answers


def _echo(raw: Any) -> dict[str, Any]:
    """The item's executionId, echoed for whoever reads the answer."""
    execution_id = raw.get("executionId") if isinstance(raw, dict) else None
    return {"executionId": execution_id} if isinstance(execution_id, str) else {}


def _error(exc: CallbackError) -> dict[str, Any]:
    body: dict[str, Any] = {"error": exc.message}
    if exc.field:
        body["field"] = exc.field
    return body

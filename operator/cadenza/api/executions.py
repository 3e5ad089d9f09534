"""``/api/v1/executions``: the run history, per Task and across Tasks, and one run in full.

Routes:
- ``GET /api/v1/tasks/{name}/executions`` (and the ``/namespaces/{namespace}/`` form): one Task's
  runs; needs ``get`` on the Task. The history outlives a deleted Task, so it is served by name.
- ``GET /api/v1/executions?namespace=ns``: every Task's runs in ``ns``; needs ``list`` on tasks
  there. Without ``namespace``: every namespace, needing ``list`` on tasks cluster-wide.
- ``GET /api/v1/executions/{id}``: one run with its attempts and result; needs ``get`` on its Task.

Filters: ``status`` and ``origin`` (comma-separated, or repeated), ``since`` and ``until``
(RFC 3339, on the time the run was requested), ``limit`` (1-500, default 50). Pages are newest
first; ``cursor`` is opaque and continues after the last run served (see
:mod:`cadenza.store.history` for why no run is repeated or skipped).
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from cadenza.api import mapping
from cadenza.api.context import ApiContext, json
from cadenza.api.errors import Problem
from cadenza.api.models import AttemptOut, ExecutionDetail, ExecutionList, ExecutionOut
from cadenza.api.tasks import page_limit, task_name
from cadenza.core.fields import FieldError
from cadenza.core.transitions import RunStatus
from cadenza.kube.reviews import Access
from cadenza.store import history
from cadenza.store.executions import Origin

_CURSOR_PREFIX = "v1:"
_MAX_ID = 2**63 - 1


def routes(ctx: ApiContext) -> list[web.RouteDef]:
    async def per_task(request: web.Request) -> web.Response:
        await ctx.guard.identify(request)  # 401 before any other answer
        ns = _namespace(ctx.namespace(request))
        name = task_name(request)
        where = _filter(request, namespace=ns, task_name=name)
        await ctx.guard.check(request, Access("get", ns, name))
        return await _page(ctx, request, where)

    async def across(request: web.Request) -> web.Response:
        await ctx.guard.identify(request)
        ns = request.match_info.get("namespace") or request.query.get("namespace", "")
        ns = _namespace(ns) if ns else ""
        where = _filter(request, namespace=ns, task_name=request.query.get("task", ""))
        await ctx.guard.check(request, Access("list", ns))
        return await _page(ctx, request, where)

    async def one(request: web.Request) -> web.Response:
        await ctx.guard.identify(request)  # 401 before anything else, and before any read
        run_id = parse_id(request.match_info["id"], "id")
        found = await ctx.blocking(lambda: history.run(ctx.engine, run_id))
        if found is None:
            raise Problem(404, f"execution {run_id} not found")
        row, attempts = found
        await ctx.guard.check(request, Access("get", row["namespace"], row["task_name"]))
        detail = ExecutionDetail(
            **_summary(row).model_dump(),
            result=row.get("result"),
            attempts=[_attempt(a) for a in attempts],
        )
        return json(detail)

    table: list[web.RouteDef] = [
        web.get("/api/v1/executions", across),
        web.get("/api/v1/namespaces/{namespace}/executions", across),
        web.get("/api/v1/executions/{id}", one),
    ]
    for prefix in ("/api/v1", "/api/v1/namespaces/{namespace}"):
        table.append(web.get(f"{prefix}/tasks/{{name}}/executions", per_task))
    return table


async def _page(ctx: ApiContext, request: web.Request, where: history.Filter) -> web.Response:
    limit = page_limit(request.query.get("limit"), 50)
    before = _cursor(request.query.get("cursor"))
    found = await ctx.blocking(lambda: history.page(ctx.engine, where, limit, before))
    cursor = None if found.next_before is None else encode_cursor(found.next_before)
    return json(ExecutionList(items=[_summary(r) for r in found.runs], cursor=cursor))


def encode_cursor(before: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{before}".encode()).decode().rstrip("=")


def _cursor(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        text = ""
    if not text.startswith(_CURSOR_PREFIX):
        raise Problem(400, "is not a cursor this API gave out; start again without it", "cursor")
    return parse_id(text.removeprefix(_CURSOR_PREFIX), "cursor")


def parse_id(raw: str, field: str) -> int:
    if not (0 < len(raw) <= 19 and raw.isascii() and raw.isdigit() and 0 < int(raw) <= _MAX_ID):
        raise Problem(400, f"must be a positive whole number, got {raw[:40]!r}", field)
    return int(raw)


def _namespace(raw: str) -> str:
    try:
        return mapping.namespace_name(raw)
    except FieldError as exc:
        raise Problem(400, exc.reason, exc.field) from None


def _values(request: web.Request, key: str, allowed: frozenset[str]) -> tuple[str, ...]:
    values = tuple(v for raw in request.query.getall(key, []) for v in raw.split(",") if v)
    wrong = [v for v in values if v not in allowed]
    if wrong:
        raise Problem(
            400, f"unknown value {wrong[0][:40]!r}; one of {', '.join(sorted(allowed))}", key
        )
    return values


def _time(request: web.Request, key: str) -> datetime | None:
    raw = request.query.get(key)
    if raw is None:
        return None
    try:
        value: datetime | None = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
    except (ValueError, OverflowError):
        value = None
    if value is None or value.tzinfo is None or not 1970 <= value.year <= 9999:
        raise Problem(
            400, f"must be an RFC 3339 time with a zone, 1970-9999, got {raw[:40]!r}", key
        )
    return value


def _filter(request: web.Request, namespace: str, task_name: str) -> history.Filter:
    return history.Filter(
        namespace=namespace,
        task_name=task_name,
        statuses=_values(request, "status", frozenset(s.value for s in RunStatus)),
        origins=_values(request, "origin", frozenset(o.value for o in Origin)),
        since=_time(request, "since"),
        until=_time(request, "until"),
    )


def _summary(row: dict[str, Any]) -> ExecutionOut:
    return ExecutionOut(
        id=row["id"], namespace=row["namespace"], task=row["task_name"],
        taskUid=row["task_uid"], origin=row["origin"], status=row["status"],
        scheduledAt=row["scheduled_at"], triggerKey=row["trigger_key"],
        requestedAt=row["requested_at"], attempt=row["attempt"],
        maxAttempts=row["max_attempts"], executor=row["executor_name"], pod=row["pod_name"],
        podIp=row["pod_ip"], dispatchedAt=row["dispatched_at"], startedAt=row["started_at"],
        finishedAt=row["finished_at"], error=row["error"], exitCode=row["exit_code"],
    )  # fmt: skip


def _attempt(row: dict[str, Any]) -> AttemptOut:
    return AttemptOut(
        attempt=row["attempt"], status=row["status"], executor=row["executor_name"],
        pod=row["pod_name"], podIp=row["pod_ip"], dispatchedAt=row["dispatched_at"],
        finishedAt=row["finished_at"], error=row["error"],
    )  # fmt: skip

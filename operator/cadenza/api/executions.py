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

from typing import Any

from aiohttp import web

from cadenza.api import mapping, parameters
from cadenza.api.context import ApiContext, json
from cadenza.api.errors import Problem
from cadenza.api.models import AttemptOut, ExecutionDetail, ExecutionList, ExecutionOut
from cadenza.api.parameters import AcrossTasks, HistoryFilter, Page, RunPath
from cadenza.api.tasks import task_name
from cadenza.core.fields import FieldError
from cadenza.kube.reviews import Access
from cadenza.store import history


def routes(ctx: ApiContext) -> list[web.RouteDef]:
    async def per_task(request: web.Request) -> web.Response:
        await ctx.guard.identify(request)  # 401 before any other answer
        ns = _namespace(ctx.namespace(request))
        name = task_name(request)
        where = _filter(parameters.read(HistoryFilter, request.query), ns, name)
        await ctx.guard.check(request, Access("get", ns, name))
        return await _page(ctx, request, where)

    async def across(request: web.Request) -> web.Response:
        await ctx.guard.identify(request)
        ns = request.match_info.get("namespace") or request.query.get("namespace", "")
        ns = _namespace(ns) if ns else ""
        query = parameters.read(AcrossTasks, request.query)
        where = _filter(query, ns, query.task)
        await ctx.guard.check(request, Access("list", ns))
        return await _page(ctx, request, where)

    async def one(request: web.Request) -> web.Response:
        await ctx.guard.identify(request)  # 401 before anything else, and before any read
        run_id = parameters.read(RunPath, request.match_info).id
        found = await ctx.blocking(lambda: history.run(ctx.engine, run_id))
        if found is None:
            await ctx.guard.missing_run(request, "get", run_id)
        row, attempts = found
        await ctx.guard.check_run(request, "get", run_id, row["namespace"], row["task_name"])
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
    page = parameters.read(Page, request.query)
    found = await ctx.blocking(lambda: history.page(ctx.engine, where, page.limit, page.cursor))
    cursor = None if found.next_before is None else parameters.encode_cursor(found.next_before)
    return json(ExecutionList(items=[_summary(r) for r in found.runs], cursor=cursor))


def _namespace(raw: str) -> str:
    try:
        return mapping.namespace_name(raw)
    except FieldError as exc:
        raise Problem(400, exc.reason, exc.field) from None


def _filter(query: HistoryFilter, namespace: str, task_name: str) -> history.Filter:
    return history.Filter(
        namespace=namespace, task_name=task_name, statuses=query.status, origins=query.origin,
        since=query.since, until=query.until,
    )  # fmt: skip


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

"""The REST API for people and the original system's clients, mounted on every replica.

Built from the settings, the database pool and the operator's Kubernetes connection; what it
adds to the replica's aiohttp application: :func:`routes` (tasks, executions, executors, the OpenAPI
document) and :data:`middleware` (JSON errors, never a 500 for a client's mistake). The probes
and the callbacks (which carry a token per run) are not behind it; ``/metrics`` and
``/api/v1/replicas`` are, through :func:`guarded`, unless ``CADENZA_API_OPEN_METRICS`` opens them.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from sqlalchemy.engine import Engine

from cadenza.api import cancel, errors, executions, executors, openapi, tasks
from cadenza.api.auth import Guard
from cadenza.api.context import ApiContext
from cadenza.kube.executors import Executors
from cadenza.kube.objects import ApiClient
from cadenza.kube.reviews import Access, Reviews
from cadenza.kube.tasks import Tasks
from cadenza.settings import ApiSettings

middleware = errors.middleware


def context(
    settings: ApiSettings,
    engine: Engine,
    client: ApiClient,
    *,
    dispatch_ca_file: Path | None = None,
    dispatch_token_grace_seconds: float = 300.0,
) -> ApiContext:
    guard = Guard(Reviews(client), settings.auth_cache_seconds, settings.auth_cache_size)
    return ApiContext(
        guard=guard,
        tasks=Tasks(client),
        engine=engine,
        settings=settings,
        executors=Executors(client),
        dispatch_ca_file=dispatch_ca_file,
        dispatch_token_grace_seconds=dispatch_token_grace_seconds,
    )


def routes(ctx: ApiContext) -> list[web.RouteDef]:
    return [
        *tasks.routes(ctx),
        *executions.routes(ctx),
        *cancel.routes(ctx),
        *executors.routes(ctx),
        *openapi.routes(),
    ]


def guarded(ctx: ApiContext, routes: list[web.RouteDef]) -> list[web.RouteDef]:
    """``routes`` for callers allowed ``get`` on their path as a non-resource URL (what RBAC
    grants with ``nonResourceURLs: [/metrics]``); as they are when the settings open them."""
    if ctx.settings.open_metrics:
        return routes

    def guard(route: web.RouteDef) -> web.RouteDef:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                await ctx.guard.check(request, Access("get", path=route.path))
            except errors.Problem as problem:
                return errors.response(problem.status, problem.message, problem.field)
            return await route.handler(request)

        return web.RouteDef(route.method, route.path, handler, route.kwargs)

    return [guard(route) for route in routes]

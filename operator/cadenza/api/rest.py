"""The REST API for people and the original system's clients, mounted on every replica.

Built from the settings, the database pool and the operator's Kubernetes connection; what it
adds to the replica's aiohttp application: :func:`routes` (tasks, executions, executors, the OpenAPI
document) and :data:`middleware` (JSON errors, never a 500 for a client's mistake). The probes,
``/metrics``, ``/api/v1/replicas`` and the callbacks are not behind it.
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.engine import Engine

from cadenza.api import cancel, errors, executions, executors, openapi, tasks
from cadenza.api.auth import Guard
from cadenza.api.context import ApiContext
from cadenza.kube.executors import Executors
from cadenza.kube.objects import ApiClient
from cadenza.kube.reviews import Reviews
from cadenza.kube.tasks import Tasks
from cadenza.settings import ApiSettings

middleware = errors.middleware


def context(settings: ApiSettings, engine: Engine, client: ApiClient) -> ApiContext:
    guard = Guard(Reviews(client), settings.auth_cache_seconds, settings.auth_cache_size)
    return ApiContext(
        guard=guard,
        tasks=Tasks(client),
        engine=engine,
        settings=settings,
        executors=Executors(client),
    )


def routes(ctx: ApiContext) -> list[web.RouteDef]:
    return [
        *tasks.routes(ctx),
        *executions.routes(ctx),
        *cancel.routes(ctx),
        *executors.routes(ctx),
        *openapi.routes(),
    ]

"""Liveness, readiness and the replicas view.

- ``/healthz``: the event loop answers (liveness).
- ``/readyz``: 200 once the replica's indexes hold everything that existed at start, 503 before;
  the body says whether it is indexed and whether it leads, with which epoch.
- ``/api/v1/replicas``: every registered replica with its role and heartbeat, from MySQL, so any
  replica can tell who leads (:func:`replica_routes`; behind a token, see ``api.rest.guarded``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from cadenza.store import instances


@dataclass(frozen=True)
class ReplicaStatus:
    instance: str
    indexed: bool
    leading: bool
    epoch: int | None


StatusFn = Callable[[], ReplicaStatus]


def routes(status: StatusFn) -> list[web.RouteDef]:
    """The probes, open to anyone (the kubelet has no token)."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        now = status()
        return web.json_response(asdict(now), status=200 if now.indexed else 503)

    return [web.get("/healthz", healthz), web.get("/readyz", readyz)]


def replica_routes(engine: Any, lock_name: str) -> list[web.RouteDef]:
    async def replicas(_: web.Request) -> web.Response:
        rows = await asyncio.to_thread(instances.list_instances, engine)
        leader = await asyncio.to_thread(instances.current_leader, engine, lock_name)
        return web.json_response(
            {
                "leader": _jsonable(leader),
                "replicas": [_jsonable(r) for r in rows],
            }
        )

    return [web.get("/api/v1/replicas", replicas)]


def _jsonable(value: Any) -> Any:
    """Dataclasses, dicts and lists of them with datetimes as ISO 8601 strings."""
    if hasattr(value, "__dataclass_fields__"):
        value = asdict(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value.isoformat() if hasattr(value, "isoformat") else value

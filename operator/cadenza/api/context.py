"""What the REST API's handlers share: the guard, the Task and Executor clients, the database and
settings.

Invariant: the handlers reach the API server and MySQL only through these, and every blocking
call goes through :meth:`ApiContext.blocking` (the replica's bounded thread pool).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from cadenza.api import errors
from cadenza.api.auth import Guard
from cadenza.kube.executors import Executors
from cadenza.kube.objects import ApiError
from cadenza.kube.tasks import Tasks
from cadenza.settings import ApiSettings

T = TypeVar("T")
log = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclasses.dataclass(frozen=True)
class ApiContext:
    guard: Guard
    tasks: Tasks
    engine: Engine
    settings: ApiSettings
    executors: Executors
    now: Callable[[], datetime] = _utc_now
    dispatch_ca_file: Path | None = None
    dispatch_token_grace_seconds: float = 300.0
    """How long after a rotation a pod that refuses the new dispatch token (its kubelet has not
    delivered it yet) is sent the previous one: the leader's setting, for the cancel's call."""
    """CAs a sidecar served over HTTPS is verified against when a run is cancelled there
    (``CADENZA_DISPATCH_CA_FILE``); None: the system trust store."""

    async def blocking(self, call: Callable[[], T]) -> T:
        """A database read in a thread; the database unreachable is a 503, not the client's
        fault."""
        try:
            return await asyncio.to_thread(call)
        except OperationalError as exc:
            log.warning("REST API: database unavailable: %s", exc)
            raise errors.Problem(503, "the database is unavailable; try again") from None

    async def kube(self, call: Callable[[], T], what: str) -> T:
        """A Task client call in a thread; its refusal becomes the matching :class:`Problem`."""
        try:
            return await asyncio.to_thread(call)
        except ApiError as exc:
            raise errors.from_kube(exc, what) from None

    def namespace(self, request: web.Request, body_namespace: str | None = None) -> str:
        """The path's namespace, else the ``namespace`` query parameter or body field, else the
        default; a body that names another namespace than the path is refused."""
        path = request.match_info.get("namespace")
        query = request.query.get("namespace")
        if path is not None:
            if body_namespace is not None and body_namespace != path:
                raise errors.Problem(
                    400, f"the body names namespace {body_namespace!r}, the URL {path!r}",
                    "namespace",
                )  # fmt: skip
            return path
        if query is not None and body_namespace is not None and query != body_namespace:
            raise errors.Problem(
                400, f"the body names namespace {body_namespace!r}, the query {query!r}",
                "namespace",
            )  # fmt: skip
        return query or body_namespace or self.settings.default_namespace


def json(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(
        text=model.model_dump_json(by_alias=True), status=status, content_type="application/json"
    )


def json_value(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status)

"""The HTTP API: ``/v1/executions`` for the operator and ``/healthz`` for probes.

Invariants:
- Every ``/v1/*`` request carries ``Authorization: Bearer <dispatch token>`` when a token is
  configured; it is compared in constant time and checked before the body is read.
- A POST is answered in this order: 401 (token), 400 (body), 200 (known executionId: the existing
  run, never a second one, even while busy or draining), 503 (draining), 429 (busy), 202 (started).
- Error bodies are JSON objects with an ``error`` message; 400s also name the ``field``.
"""

from __future__ import annotations

import hmac
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from cadenza_sidecar import protocol
from cadenza_sidecar.callbacks import CallbackSender
from cadenza_sidecar.protocol import ExecutionId, InvalidRequest, JsonObject
from cadenza_sidecar.runs import Busy, Draining, Run, RunRegistry

logger = logging.getLogger(__name__)


def _json(body: JsonObject, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=protocol.dumps)


class Api:
    """Request handlers bound to the sidecar's registry and callback sender."""

    def __init__(
        self,
        registry: RunRegistry,
        callbacks: CallbackSender,
        *,
        pod: str,
        token: str | None,
        cancel_wait_seconds: float,
    ) -> None:
        self._registry = registry
        self._callbacks = callbacks
        self._pod = pod
        self._token = token.encode() if token is not None else None
        self._cancel_wait_seconds = cancel_wait_seconds

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._authenticate])
        app.router.add_get("/healthz", self.healthz)
        app.router.add_post("/v1/executions", self.start_execution)
        # `.+` so ids containing "/" stay addressable.
        app.router.add_get("/v1/executions/{execution_id:.+}", self.get_execution)
        app.router.add_delete("/v1/executions/{execution_id:.+}", self.cancel_execution)
        return app

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._token is None or not request.path.startswith("/v1/"):
            return await handler(request)
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode(), self._token
        ):
            return await handler(request)
        logger.warning(
            "unauthorized request",
            extra={"method": request.method, "path": request.path, "remote": request.remote},
        )
        return web.json_response(
            {"error": "missing or wrong dispatch token (Authorization: Bearer <token>)"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="cadenza-sidecar"'},
        )

    async def healthz(self, request: web.Request) -> web.Response:
        draining = self._registry.draining
        return _json(
            {
                "status": "draining" if draining else "ok",
                "inFlight": self._registry.in_flight,
                "capacity": self._registry.capacity,
                "draining": draining,
                "pod": self._pod,
                "pendingCallbacks": self._callbacks.pending,
            },
            status=503 if draining else 200,
        )

    async def start_execution(self, request: web.Request) -> web.Response:
        try:
            execution = protocol.parse_execution_request(await request.read())
        except InvalidRequest as exc:
            return _json({"error": exc.message, "field": exc.field}, status=400)
        known = self._registry.view(execution.execution_id)
        if known is not None:
            return _json(known)
        try:
            run = self._registry.start(execution)
        except Draining:
            return _json({"error": "draining"}, status=503)
        except Busy as busy:
            return _json(
                {"error": "busy", "inFlight": busy.in_flight, "capacity": busy.capacity},
                status=429,
            )
        return _json(
            {"executionId": run.request.execution_id, "state": "running", "pod": self._pod},
            status=202,
        )

    async def get_execution(self, request: web.Request) -> web.Response:
        execution_id = ExecutionId(request.match_info["execution_id"])
        view = self._registry.view(execution_id)
        if view is None:
            return _unknown(execution_id)
        return _json(view)

    async def cancel_execution(self, request: web.Request) -> web.Response:
        execution_id = ExecutionId(request.match_info["execution_id"])
        known = self._registry.lookup(execution_id)
        if known is None:
            return _unknown(execution_id)
        if not isinstance(known, Run):
            return _json(known.view())  # already finished: nothing to cancel
        logger.info("cancel requested", extra={"executionId": execution_id})
        await self._registry.cancel(
            known, "cancel requested by the operator", self._cancel_wait_seconds
        )
        view = self._registry.view(execution_id)
        return _json(view if view is not None else known.view(), status=202)


def _unknown(execution_id: ExecutionId) -> web.Response:
    return _json({"error": "unknown execution", "executionId": execution_id}, status=404)

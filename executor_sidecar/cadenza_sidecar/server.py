"""The HTTP API: ``/v1/executions`` (and its batch form) for the operator, ``/healthz`` for probes.

Invariants:
- Every ``/v1/*`` request carries ``Authorization: Bearer <dispatch token>`` when a token is
  configured; it is checked (in constant time, against the current token and the previous one
  within its grace: :mod:`cadenza_sidecar.dispatch_tokens`) before the body is read.
- A POST is answered in this order: 401 (token), 400 (body), 200 (known executionId: the existing
  run, never a second one, even while busy or draining), 503 (draining), 429 (busy), 202 (started).
  Past the 401, ``admission.admit`` decides, for the single endpoint and for every batch item.
- A batch is answered 200 with one result per item, in order, unless the batch itself is unusable:
  413 above ``max_batch_bytes``, 400 naming ``body`` or ``executions``. One bad item never
  spoils the others.
- Error bodies are JSON objects with an ``error`` message; 400s also name the ``field``.
"""

from __future__ import annotations

import collections
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from cadenza_sidecar import admission, protocol
from cadenza_sidecar.callbacks import CallbackSender
from cadenza_sidecar.dispatch_tokens import DispatchTokens
from cadenza_sidecar.protocol import ExecutionId, InvalidRequest, JsonObject
from cadenza_sidecar.runs import Run, RunRegistry

BATCH_PATH = "/v1/executions:batch"
_CHUNK = 65536
MAX_RUN_BYTES = 1024 * 1024
"""Largest single dispatch body (aiohttp's own default limit, answered here as JSON)."""

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
        tokens: DispatchTokens | None,
        cancel_wait_seconds: float,
        max_batch_items: int,
        max_batch_bytes: int,
        callbacks_allowed: tuple[str, ...] = (),
    ) -> None:
        self._registry = registry
        self._callbacks_allowed = callbacks_allowed
        self._callbacks = callbacks
        self._pod = pod
        self._tokens = tokens
        self._cancel_wait_seconds = cancel_wait_seconds
        self._max_batch_items = max_batch_items
        self._max_batch_bytes = max_batch_bytes

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._authenticate])
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/health", self.healthz)  # the original system's health URL
        app.router.add_post("/v1/executions", self.start_execution)
        # A custom method (AIP-136 style) rather than /v1/executions/batch, which would shadow
        # the run whose id is "batch".
        app.router.add_post(BATCH_PATH, self.start_executions)
        # `.+` so ids containing "/" stay addressable.
        app.router.add_get("/v1/executions/{execution_id:.+}", self.get_execution)
        app.router.add_delete("/v1/executions/{execution_id:.+}", self.cancel_execution)
        return app

    def use_token(self, token: str) -> None:
        """Accept ``token``, and only it, from now on (a registration answered it)."""
        if self._tokens is None:
            self._tokens = DispatchTokens(token, grace_seconds=0)
        else:
            self._tokens.replace(token)

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._tokens is None or not request.path.startswith("/v1/"):
            return await handler(request)
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        # Header bytes that are not UTF-8 arrive as lone surrogates: such a token is just wrong.
        offered = credentials.strip().encode("utf-8", "surrogatepass")
        if scheme.lower() == "bearer" and self._tokens.accepts(offered):
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
                "protocol": protocol.PROTOCOL_VERSION,
            },
            status=503 if draining else 200,
        )

    async def start_execution(self, request: web.Request) -> web.Response:
        raw = await _read_at_most(request, MAX_RUN_BYTES)
        if raw is None:
            return _too_large(f"dispatch body larger than {MAX_RUN_BYTES} bytes", MAX_RUN_BYTES)
        try:
            body = protocol.decode_body(raw)
        except InvalidRequest as exc:
            decided = admission.refused(exc)
        else:
            decided = admission.admit(self._registry, self._pod, body, self._callbacks_allowed)
        return _json(decided.body, status=decided.status)

    async def start_executions(self, request: web.Request) -> web.Response:
        raw = await _read_at_most(request, self._max_batch_bytes)
        if raw is None:
            limit = self._max_batch_bytes
            return _too_large(f"batch body larger than {limit} bytes (--max-batch-bytes); split it",
                              limit)  # fmt: skip
        try:
            items = protocol.parse_batch(raw, self._max_batch_items)
        except InvalidRequest as exc:
            return _json({"error": exc.message, "field": exc.field}, status=400)
        # No await from here to the answer: the batch is admitted in one step, in order.
        allowed = self._callbacks_allowed
        decisions = [admission.admit(self._registry, self._pod, item, allowed) for item in items]
        results: list[protocol.JsonValue] = [
            _batch_item(index, item, decided)
            for index, (item, decided) in enumerate(zip(items, decisions, strict=True))
        ]
        counts = collections.Counter(decided.result.value for decided in decisions)
        logger.info("batch dispatched", extra={"items": len(items), **counts})
        return _json({"results": results})

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


def _batch_item(index: int, item: object, decided: admission.Admission) -> JsonObject:
    execution_id = item.get("executionId") if isinstance(item, dict) else None
    answer = decided.batch_item(execution_id)
    if not isinstance(item, dict):
        # "body" would point at the whole batch; name the item instead.
        answer.update(field=f"executions[{index}]", error=f"executions[{index}] must be an object")
    return answer


async def _read_at_most(request: web.Request, limit: int) -> bytes | None:
    """The body, or None when it is larger than ``limit`` bytes (the app-wide 1 MiB limit of
    ``request.read()`` is the single endpoint's, not the batch's)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    data = bytearray()
    while chunk := await request.content.read(_CHUNK):
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


def _too_large(error: str, limit: int) -> web.Response:
    return _json({"error": error, "field": "body", "limit": limit}, status=413)


def _unknown(execution_id: ExecutionId) -> web.Response:
    return _json({"error": "unknown execution", "executionId": execution_id}, status=404)

"""Errors of the REST API: one exception, one JSON shape ``{"error": ..., "field": ...}``.

Invariant: nothing a client sends produces a 500. Handlers raise :class:`Problem` for the
client's mistakes; :func:`middleware` turns it (and aiohttp's own 404/405) into JSON, and turns
any other exception into a logged 500 that names no internals, because that is our bug.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from cadenza.kube.objects import ApiError

log = logging.getLogger(__name__)

_OWN_PREFIXES = (
    "/api/v1/tasks", "/api/v1/namespaces", "/api/v1/executions", "/api/v1/executors",
    "/api/v1/openapi",
)  # fmt: skip


class Problem(Exception):
    """A request the API answers with ``status`` and ``{"error": message, "field": field}``."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def response(status: int, message: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field:
        body["field"] = field
    return web.json_response(body, status=status)


_UNION_TAGS = frozenset({"str", "int", "bool", "ExecutorEntry", "RetryFields", "HistoryFields"})


def from_validation(error: ValidationError) -> Problem:
    """The deepest problem pydantic found (for a union, the branch that got furthest), naming
    its field (``executors.0.weight``)."""
    found = error.errors(include_url=False)
    first = max(found, key=lambda e: len(e.get("loc", ())))
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    loc = [part for part in first.get("loc", ()) if part not in _UNION_TAGS]
    field = ".".join(str(part) for part in loc)
    if not field and ": " in message:  # a model validator names its field in the message
        field, message = message.split(": ", 1)
    return Problem(400, message, field or None)


def from_kube(error: ApiError, what: str) -> Problem:
    """The API server's refusal of a change, passed on: 404, 409, 422, else 502."""
    if error.status == 404:
        return Problem(404, f"{what} not found")
    if error.status == 409:
        return Problem(409, error.message)
    if error.status in (400, 422):
        return Problem(422, error.message)
    if error.status == 403:  # the operator's own identity lacks a grant: the chart's bug
        log.error("the operator may not do this (check its RBAC): %s", error.message)
        return Problem(502, "the operator's own permissions do not allow this; see its log")
    return Problem(502, f"the Kubernetes API server failed: {error.message}")


async def read_json(request: web.Request, limit: int) -> Any:
    """The body as JSON; 413 past ``limit`` bytes, 400 when it is not JSON."""
    too_large = Problem(413, f"the body is larger than {limit} bytes", "body")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(65536):
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks), parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(400, f"the body is not valid JSON: {exc}", "body") from None
    except RecursionError:
        raise Problem(400, "the body nests too deeply to read", "body") from None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def parse(model: type[BaseModel], raw: Any) -> Any:
    """``raw`` validated as ``model`` (400 naming the field otherwise)."""
    if not isinstance(raw, dict):
        raise Problem(400, "the body must be a JSON object", "body")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise from_validation(exc) from None


@web.middleware
async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if not request.path.startswith(_OWN_PREFIXES):
        return await handler(request)  # type: ignore[no-any-return]
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except Problem as problem:
        return response(problem.status, problem.message, problem.field)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return response(exc.status, exc.reason)
    except Exception:
        log.exception("REST API failure on %s %s", request.method, request.path)
        return response(500, "internal error; the operator's log has the details")

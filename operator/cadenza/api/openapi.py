"""The OpenAPI 3.1 document of the REST API, served at ``/api/v1/openapi.json``.

The schemas are generated from the pydantic models that validate the requests
(:mod:`cadenza.api.models`); only the list of operations is written here, beside the routes it
describes, and ``tests/api`` checks that each operation answers on the running API.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic.json_schema import models_json_schema

from cadenza.api import executor_models, models

_REF = "#/components/schemas/{model}"


def _ref(model: str) -> dict[str, Any]:
    return {"$ref": _REF.format(model=model)}


def _answer(model: str | None, description: str) -> dict[str, Any]:
    if model is None:
        return {"description": description}
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


_ERRORS = {
    str(code): _answer("ErrorOut", text)
    for code, text in (
        (400, "Malformed request; `field` names the culprit"),
        (401, "No token, or a token the API server does not accept"),
        (403, "The caller's RBAC does not allow the verb"),
        (404, "No such Task or run"),
    )
}
_WRITE_ERRORS = {
    **_ERRORS,
    "409": _answer("ErrorOut", "Name conflict, or the Task changed meanwhile"),
    "413": _answer("ErrorOut", "Body too large"),
    "422": _answer("ErrorOut", "The API server refused the change (its message)"),
}


def _param(name: str, where: str = "query", schema: dict[str, Any] | None = None,
           required: bool = False) -> dict[str, Any]:  # fmt: skip
    return {"name": name, "in": where, "required": required or where == "path",
            "schema": schema or {"type": "string"}}  # fmt: skip


_LIST_TASKS = [_param("labelSelector"), _param("state", schema={"enum": ["active", "suspended",
    "failing", "running", "invalid"]}), _param("limit", schema={"type": "integer", "minimum": 1,
    "maximum": 500}), _param("continue")]  # fmt: skip
_HISTORY = [_param("status"), _param("origin"),
    _param("since", schema={"type": "string", "format": "date-time"}),
    _param("until", schema={"type": "string", "format": "date-time"}),
    _param("limit", schema={"type": "integer", "minimum": 1, "maximum": 500}),
    _param("cursor")]  # fmt: skip


_ALL_NAMESPACES = _param("allNamespaces", schema={"type": "boolean"})
"""Only on the namespace-less list: every namespace (``list`` on tasks cluster-wide)."""


def _body(model: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(model)}}}


def _task_paths(prefix: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    name = [*params, _param("name", "path")]
    return {
        f"{prefix}/tasks": {
            "parameters": params,
            "get": {"summary": "List Tasks (verb: list)",
                    "parameters": _LIST_TASKS + ([_ALL_NAMESPACES] if prefix == "/api/v1" else []),
                    "responses": {"200": _answer("TaskList", "A page of Tasks"), **_ERRORS}},
            "post": {"summary": "Create a Task (verb: create)", "requestBody": _body("TaskBody"),
                     "responses": {"201": _answer("TaskOut", "Created"), **_WRITE_ERRORS}},
        },
        f"{prefix}/tasks/{{name}}": {
            "parameters": name,
            "get": {"summary": "Read a Task (verb: get)",
                    "responses": {"200": _answer("TaskOut", "The Task"), **_ERRORS}},
            "put": {"summary": "Replace a Task (verb: update)", "requestBody": _body("TaskBody"),
                    "responses": {"200": _answer("TaskOut", "Replaced"), **_WRITE_ERRORS}},
            "patch": {"summary": "Change some fields (verb: patch)",
                      "requestBody": _body("TaskFields"),
                      "responses": {"200": _answer("TaskOut", "Changed"), **_WRITE_ERRORS}},
            "delete": {"summary": "Delete a Task (verb: delete)",
                       "responses": {"204": _answer(None, "Deleted"), **_ERRORS}},
        },
        f"{prefix}/tasks/{{name}}/trigger": {
            "parameters": [*name, _param("Idempotency-Key", "header")],
            "post": {"summary": "Fire one run now (verb: trigger)",
                     "responses": {"200": _answer("TriggerOut", "The run was recorded"),
                                   "202": _answer("TriggerOut", "Not recorded yet"),
                                   **_WRITE_ERRORS}},
        },
        f"{prefix}/tasks/{{name}}/executions": {
            "parameters": name,
            "get": {"summary": "A Task's runs, newest first (verb: get)", "parameters": _HISTORY,
                    "responses": {"200": _answer("ExecutionList", "A page of runs"), **_ERRORS}},
        },
    }  # fmt: skip


_EXECUTOR_WRITE_ERRORS = {
    **_WRITE_ERRORS,
    "404": _answer("ErrorOut", "No such Executor, instance or Task"),
    "409": _answer("ErrorOut", "The instance id belongs to another Executor, or a conflict"),
}


def _executor_paths(prefix: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    instance = [*params, _param("instance_id", "path")]
    return {
        f"{prefix}/executors": {
            "parameters": params,
            "get": {"summary": "List Executors with pod and endpoint health (verb: list)",
                    "responses": {"200": _answer("ExecutorList", "The Executors"), **_ERRORS}},
        },
        f"{prefix}/executors/register": {
            "parameters": params,
            "post": {"summary": "Register an executor outside the cluster (verb: create or "
                                "update; create/update on each Task listed)",
                     "requestBody": _body("RegisterBody"),
                     "responses": {"200": _answer("RegisterOut", "Updated"),
                                   "201": _answer("RegisterOut", "Executor created"),
                                   **_EXECUTOR_WRITE_ERRORS}},
        },
        f"{prefix}/executors/{{name}}": {
            "parameters": [*params, _param("name", "path")],
            "get": {"summary": "Read an Executor (verb: get)",
                    "responses": {"200": _answer("ExecutorOut", "The Executor"), **_ERRORS}},
            "delete": {"summary": "Deregister the instance whose id is `name` (verb: update on "
                                  "its Executor; also delete when it was the last member)",
                       "responses": {"204": _answer(None, "Deregistered"),
                                     **_EXECUTOR_WRITE_ERRORS}},
        },
        f"{prefix}/executors/{{instance_id}}/heartbeat": {
            "parameters": instance,
            "post": {"summary": "Heartbeat of an instance (verb: update on its Executor)",
                     "requestBody": {"required": False, "content": {"application/json": {
                         "schema": _ref("HeartbeatBody")}}},
                     "responses": {"200": _answer("HeartbeatOut", "Recorded"),
                                   **_EXECUTOR_WRITE_ERRORS}},
        },
        f"{prefix}/executors/{{instance_id}}/status": {
            "parameters": instance,
            "put": {"summary": "online, draining or offline (verb: update on its Executor)",
                    "requestBody": _body("StatusBody"),
                    "responses": {"200": _answer("EndpointOut", "The endpoint"),
                                  **_EXECUTOR_WRITE_ERRORS}},
        },
    }  # fmt: skip


def document() -> dict[str, Any]:
    _, schemas = models_json_schema(
        [(m, "serialization" if m.__name__.endswith(("Out", "List", "Detail")) else "validation")
         for m in (*models.PUBLISHED, *executor_models.PUBLISHED)], ref_template=_REF,
    )  # fmt: skip
    namespace = [_param("namespace", "path")]
    default_ns = [_param("namespace")]
    paths: dict[str, Any] = {
        **_task_paths("/api/v1", default_ns),
        **_task_paths("/api/v1/namespaces/{namespace}", namespace),
        "/api/v1/executions": {"get": {
            "summary": "Runs across Tasks (verb: list on tasks, in `namespace` or cluster-wide)",
            "parameters": [*default_ns, _param("task"), *_HISTORY],
            "responses": {"200": _answer("ExecutionList", "A page of runs"), **_ERRORS}}},
        "/api/v1/namespaces/{namespace}/executions": {"get": {
            "summary": "Runs across the namespace's Tasks (verb: list on tasks)",
            "parameters": [*namespace, _param("task"), *_HISTORY],
            "responses": {"200": _answer("ExecutionList", "A page of runs"), **_ERRORS}}},
        "/api/v1/executions/{id}": {"get": {
            "summary": "One run with its attempts and result (verb: get on its Task)",
            "parameters": [_param("id", "path", {"type": "integer", "minimum": 1})],
            "responses": {"200": _answer("ExecutionDetail", "The run"), **_ERRORS}}},
        "/api/v1/executions/{id}/cancel": {"post": {
            "summary": "Cancel a run and tell its pod (verb: cancel on its Task)",
            "parameters": [_param("id", "path", {"type": "integer", "minimum": 1})],
            "responses": {"200": _answer("CancelOut", "Cancelled"), **_ERRORS,
                          "409": _answer("ErrorOut", "The run is already over")}}},
    }  # fmt: skip
    paths.update(_executor_paths("/api/v1", default_ns))
    paths.update(_executor_paths("/api/v1/namespaces/{namespace}", namespace))
    return {
        "openapi": "3.1.0",
        "info": {"title": "Cadenza REST API", "version": "v1",
                 "description": "Kubernetes bearer tokens; RBAC on tasks.cadenza.dev."},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"schemas": schemas.get("$defs", {}),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }  # fmt: skip


def routes() -> list[web.RouteDef]:
    text = json.dumps(document())

    async def serve(request: web.Request) -> web.Response:
        return web.Response(text=text, content_type="application/json")

    return [web.get("/api/v1/openapi.json", serve)]

"""The OpenAPI 3.1 document of the REST API, served at ``/api/v1/openapi.json``.

The schemas are generated from the pydantic models that validate the requests: the bodies'
(:mod:`cadenza.api.models`, :mod:`cadenza.api.executor_models`) and the query, header and path
parameters' (:mod:`cadenza.api.parameters`); only the list of operations, and which parameter
sets each takes, is written here, beside the routes it describes, and ``tests/api`` checks that
each operation answers on the running API.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic.json_schema import models_json_schema

from cadenza.api import executor_models, models, parameters
from cadenza.api.parameters import (
    AcrossTasks,
    AllNamespaces,
    HistoryFilter,
    Instance,
    Named,
    Page,
    RunPath,
    Scope,
    TaskListQuery,
    TriggerHeaders,
)

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


def _params(route: str, *sets: type[parameters.Parameters]) -> list[dict[str, Any]]:
    """The parameters of the models ``sets`` as ``route`` takes them: a field the route's
    template names (``{namespace}``) is in its path, any other where its model says."""
    found = []
    for model in sets:
        properties = model.model_json_schema(by_alias=True, ref_template=_REF)["properties"]
        for name, field in model.model_fields.items():
            key = field.alias or name
            where = "path" if f"{{{key}}}" in route else model.IN
            found.append({
                "name": key, "in": where, "required": where == "path" or field.is_required(),
                "description": field.description, "schema": _value_schema(properties[key]),
            })  # fmt: skip
    return found


def _value_schema(prop: dict[str, Any]) -> dict[str, Any]:
    """A field's schema as a parameter's: no title or description (the parameter has it), and
    no null (an absent parameter is the null)."""
    schema = {k: v for k, v in prop.items() if k not in ("title", "description")}
    if schema.get("default", 0) is None:
        del schema["default"]
    branches = [b for b in schema.pop("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        schema.update(branches[0])
    elif branches:
        schema["anyOf"] = branches
    return schema


def _body(model: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(model)}}}


def _task_paths(prefix: str) -> dict[str, Any]:
    tasks, task = f"{prefix}/tasks", f"{prefix}/tasks/{{name}}"
    listing = [TaskListQuery] + ([AllNamespaces] if "{namespace}" not in prefix else [])
    return {
        tasks: {
            "parameters": _params(tasks, Scope),
            "get": {"summary": "List Tasks (verb: list)", "parameters": _params(tasks, *listing),
                    "responses": {"200": _answer("TaskList", "A page of Tasks"), **_ERRORS}},
            "post": {"summary": "Create a Task (verb: create)", "requestBody": _body("TaskBody"),
                     "responses": {"201": _answer("TaskOut", "Created"), **_WRITE_ERRORS}},
        },
        task: {
            "parameters": _params(task, Scope, Named),
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
        f"{task}/trigger": {
            "parameters": _params(task, Scope, Named, TriggerHeaders),
            "post": {"summary": "Fire one run now (verb: trigger)",
                     "responses": {"200": _answer("TriggerOut", "The run was recorded"),
                                   "202": _answer("TriggerOut", "Not recorded yet"),
                                   **_WRITE_ERRORS}},
        },
        f"{task}/executions": {
            "parameters": _params(task, Scope, Named),
            "get": {"summary": "A Task's runs, newest first (verb: get)",
                    "parameters": _params(task, HistoryFilter, Page),
                    "responses": {"200": _answer("ExecutionList", "A page of runs"), **_ERRORS}},
        },
    }  # fmt: skip


_EXECUTOR_WRITE_ERRORS = {
    **_WRITE_ERRORS,
    "404": _answer("ErrorOut", "No such Executor, instance or Task"),
    "409": _answer("ErrorOut", "The instance id belongs to another Executor, or a conflict"),
}


def _executor_paths(prefix: str) -> dict[str, Any]:
    executor, instance = f"{prefix}/executors/{{name}}", f"{prefix}/executors/{{instance_id}}"
    params, instance_params = _params(prefix, Scope), _params(instance, Scope, Instance)
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
        executor: {
            "parameters": _params(executor, Scope, Named),
            "get": {"summary": "Read an Executor (verb: get)",
                    "responses": {"200": _answer("ExecutorOut", "The Executor"), **_ERRORS}},
            "delete": {"summary": "Deregister the instance whose id is `name` (verb: update on "
                                  "its Executor; also delete when it was the last member)",
                       "responses": {"204": _answer(None, "Deregistered"),
                                     **_EXECUTOR_WRITE_ERRORS}},
        },
        f"{prefix}/executors/{{instance_id}}/heartbeat": {
            "parameters": instance_params,
            "post": {"summary": "Heartbeat of an instance (verb: update on its Executor)",
                     "requestBody": {"required": False, "content": {"application/json": {
                         "schema": _ref("HeartbeatBody")}}},
                     "responses": {"200": _answer("HeartbeatOut", "Recorded"),
                                   **_EXECUTOR_WRITE_ERRORS}},
        },
        f"{prefix}/executors/{{instance_id}}/status": {
            "parameters": instance_params,
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
    across, namespaced = "/api/v1/executions", "/api/v1/namespaces/{namespace}/executions"
    run = "/api/v1/executions/{id}"
    paths: dict[str, Any] = {
        **_task_paths("/api/v1"),
        **_task_paths("/api/v1/namespaces/{namespace}"),
        across: {"get": {
            "summary": "Runs across Tasks (verb: list on tasks, in `namespace` or cluster-wide)",
            "parameters": _params(across, Scope, AcrossTasks, Page),
            "responses": {"200": _answer("ExecutionList", "A page of runs"), **_ERRORS}}},
        namespaced: {"get": {
            "summary": "Runs across the namespace's Tasks (verb: list on tasks)",
            "parameters": _params(namespaced, Scope, AcrossTasks, Page),
            "responses": {"200": _answer("ExecutionList", "A page of runs"), **_ERRORS}}},
        run: {"get": {
            "summary": "One run with its attempts and result (verb: get on its Task)",
            "parameters": _params(run, RunPath),
            "responses": {"200": _answer("ExecutionDetail", "The run"), **_ERRORS}}},
        f"{run}/cancel": {"post": {
            "summary": "Cancel a run and tell its pod (verb: cancel on its Task)",
            "parameters": _params(run, RunPath),
            "responses": {"200": _answer("CancelOut", "Cancelled"), **_ERRORS,
                          "409": _answer("ErrorOut", "The run is already over")}}},
    }  # fmt: skip
    paths.update(_executor_paths("/api/v1"))
    paths.update(_executor_paths("/api/v1/namespaces/{namespace}"))
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

"""``/api/v1/tasks``: create, list, read, replace, patch, delete and trigger Tasks.

Every route exists twice: namespace-less (``/api/v1/tasks/{name}``, the namespace from the
``namespace`` query parameter or the API's default), as the original system's users address tasks
by name, and Kubernetes-shaped (``/api/v1/namespaces/{namespace}/tasks/{name}``). A ``{name}``
may be an original name: ``test_task`` finds the Task ``test-task``.

Invariant: each handler authorises the caller (:class:`~cadenza.api.auth.Guard`) for the verb a
``kubectl`` user would need before it acts, then acts with the operator's identity; the Task
object is the only copy of the definition (read fresh on every request).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web

from cadenza.api import errors, mapping, parameters
from cadenza.api.context import ApiContext, json
from cadenza.api.errors import Problem, parse, read_json
from cadenza.api.models import TaskBody, TaskFields, TaskList, TriggerOut
from cadenza.core.fields import FieldError
from cadenza.core.triggers import trigger_key
from cadenza.kube.objects import ApiError
from cadenza.kube.reviews import Access
from cadenza.store import history

T = TypeVar("T")


def routes(ctx: ApiContext) -> list[web.RouteDef]:
    handlers = _Handlers(ctx)
    table: list[web.RouteDef] = []
    for prefix in ("/api/v1", "/api/v1/namespaces/{namespace}"):
        table += [
            web.get(f"{prefix}/tasks", handlers.list),
            web.post(f"{prefix}/tasks", handlers.create),
            web.get(f"{prefix}/tasks/{{name}}", handlers.get),
            web.put(f"{prefix}/tasks/{{name}}", handlers.replace),
            web.patch(f"{prefix}/tasks/{{name}}", handlers.patch),
            web.delete(f"{prefix}/tasks/{{name}}", handlers.delete),
            web.post(f"{prefix}/tasks/{{name}}/trigger", handlers.trigger),
        ]
    return table


def all_namespaces(request: web.Request) -> bool:
    """``allNamespaces=true``: list in every namespace (``list`` on tasks cluster-wide), as
    ``kubectl get tasks -A``; refused beside a namespace in the path or the query."""
    everywhere = parameters.read(parameters.AllNamespaces, request.query).allNamespaces
    named = "namespace" in request.match_info or "namespace" in request.query
    if everywhere and named:
        raise Problem(400, "lists every namespace; leave out the namespace", "allNamespaces")
    return everywhere


def task_name(request: web.Request) -> str:
    return str(_field(lambda: mapping.kube_name(request.match_info["name"])))


def _field(read: Callable[[], T]) -> T:
    try:
        return read()
    except FieldError as exc:
        raise Problem(400, exc.reason, exc.field) from None


REWRITE_ATTEMPTS = 5
"""Replaces of one PUT or PATCH tried while only the Task's status moves under it."""


def _edited(task: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a PUT or PATCH is based on: everything of the Task but its status and versions."""
    meta = task.get("metadata") or {}
    return (task.get("spec"), meta.get("labels"), meta.get("annotations"))


class _Handlers:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    async def create(self, request: web.Request) -> web.Response:
        await self.ctx.guard.identify(request)  # 401 before any other answer
        ctx = self.ctx
        body: TaskBody = parse(TaskBody, await read_json(request, ctx.settings.max_body_bytes))
        ns = _field(lambda: mapping.namespace_name(ctx.namespace(request, body.namespace)))
        task = _field(lambda: mapping.manifest(body, ns, ctx.settings.default_executor))
        name = task["metadata"]["name"]
        await ctx.guard.check(request, Access("create", ns, name))
        _field(lambda: mapping.check(task["spec"], body.model_fields_set))
        try:
            created = await ctx.kube(lambda: ctx.tasks.create(ns, task), f"namespace {ns}")
        except Problem as problem:
            if problem.status != 409:
                raise
            raise Problem(
                409, f"a Task named {name!r} already exists in namespace {ns}; choose another"
                " name, or update it with PUT or PATCH", "name",
            ) from None  # fmt: skip
        return json(mapping.view(created, ctx.now()), status=201)

    async def list(self, request: web.Request) -> web.Response:
        await self.ctx.guard.identify(request)  # 401 before any other answer
        ctx = self.ctx
        everywhere = all_namespaces(request)
        ns = "" if everywhere else _field(lambda: mapping.namespace_name(ctx.namespace(request)))
        query = parameters.read(parameters.TaskListQuery, request.query)
        state = query.state or ""
        await ctx.guard.check(request, Access("list", ns))
        fields = {"suspended": "spec.suspend=true", "active": "spec.suspend=false"}
        try:
            page = await asyncio.to_thread(
                lambda: ctx.tasks.page(
                    ns,
                    label_selector=query.labelSelector,
                    field_selector=fields.get(state, ""),
                    limit=query.limit,
                    continue_token=query.continue_,
                )
            )
        except ApiError as exc:
            if exc.status in (400, 410, 422):
                field = "continue" if "continue" in exc.message.lower() else "labelSelector"
                raise Problem(400, exc.message, field) from None
            raise errors.from_kube(exc, f"namespace {ns}" if ns else "every namespace") from None
        now = ctx.now()
        items = [mapping.view(t, now) for t in page.items]
        items = [t for t in items if _in_state(t.spec, t.status, state)]
        return json(TaskList.model_validate({"items": items, "continue": page.continue_token}))

    async def get(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        ns, name = await self._authorised(request, "get")
        found = await ctx.kube(lambda: ctx.tasks.get(ns, name), f"Task {ns}/{name}")
        return json(mapping.view(found, ctx.now()))

    async def replace(self, request: web.Request) -> web.Response:
        await self.ctx.guard.identify(request)  # 401 before any other answer
        ctx = self.ctx
        body: TaskBody = parse(TaskBody, await read_json(request, ctx.settings.max_body_bytes))
        ns, name = await self._authorised(request, "update", body)
        wanted = _field(lambda: mapping.manifest(body, ns, ctx.settings.default_executor))
        _field(lambda: mapping.check(wanted["spec"], body.model_fields_set))

        def change(current: dict[str, Any]) -> dict[str, Any]:
            metadata = dict(current["metadata"])
            metadata["annotations"] = {
                **(metadata.get("annotations") or {}),
                **wanted["metadata"]["annotations"],
            }
            if "labels" in body.model_fields_set:
                metadata["labels"] = wanted["metadata"].get("labels") or {}
            return {**current, "metadata": metadata, "spec": wanted["spec"]}

        return json(mapping.view(await self._rewrite(ns, name, change), ctx.now()))

    async def patch(self, request: web.Request) -> web.Response:
        await self.ctx.guard.identify(request)  # 401 before any other answer
        ctx = self.ctx
        body: TaskFields = parse(TaskFields, await read_json(request, ctx.settings.max_body_bytes))
        ns, name = await self._authorised(request, "patch", body)

        def change(current: dict[str, Any]) -> dict[str, Any]:
            spec = mapping.merged(current.get("spec") or {}, mapping.spec_fragment(body))
            _field(lambda: mapping.check(spec, body.model_fields_set))
            metadata = dict(current["metadata"])
            annotations = dict(metadata.get("annotations") or {})
            if body.description is not None:
                annotations[mapping.DESCRIPTION] = body.description
            metadata["annotations"] = annotations
            if body.labels is not None:
                metadata["labels"] = {**(metadata.get("labels") or {}), **body.labels}
            return {**current, "metadata": metadata, "spec": spec}

        return json(mapping.view(await self._rewrite(ns, name, change), ctx.now()))

    async def _rewrite(
        self, ns: str, name: str, change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """Read the Task, ``change`` it and replace it at the version read. A conflict caused
        only by a status write (the leader writes status all the time) is tried again on the
        new version; one caused by a change of the spec, labels or annotations is a 409."""
        ctx, what = self.ctx, f"Task {ns}/{name}"
        first = await ctx.kube(lambda: ctx.tasks.get(ns, name), what)
        current = first
        for _ in range(REWRITE_ATTEMPTS):
            updated = change(current)
            try:
                return await asyncio.to_thread(ctx.tasks.replace, ns, name, updated)
            except ApiError as exc:
                if exc.status != 409:
                    raise errors.from_kube(exc, what) from None
            current = await ctx.kube(lambda: ctx.tasks.get(ns, name), what)
            if _edited(first) != _edited(current):
                break
        raise Problem(409, f"{what} changed while it was being updated; read it and try again")

    async def delete(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        ns, name = await self._authorised(request, "delete")
        await ctx.kube(lambda: ctx.tasks.delete(ns, name), f"Task {ns}/{name}")
        return web.Response(status=204)

    async def trigger(self, request: web.Request) -> web.Response:
        """Set ``cadenza.dev/trigger`` to the Idempotency-Key (or a fresh value) and wait, with
        a deadline, for the leader's run row carrying that trigger key."""
        await self.ctx.guard.identify(request)  # 401 before any other answer
        ctx = self.ctx
        given = parameters.read(parameters.TriggerHeaders, request.headers).key
        key = given or f"api-{uuid.uuid4().hex}"
        ns, name = await self._authorised(request, "trigger")
        found = await ctx.kube(lambda: ctx.tasks.get(ns, name), f"Task {ns}/{name}")
        uid, dedupe = str(found["metadata"]["uid"]), trigger_key(key)
        run = await ctx.blocking(lambda: history.run_by_trigger(ctx.engine, uid, dedupe))
        if run is None:
            annotations = found["metadata"].get("annotations") or {}
            if annotations.get(mapping.TRIGGER) != key:
                await ctx.kube(
                    lambda: ctx.tasks.annotate(ns, name, {mapping.TRIGGER: key}),
                    f"Task {ns}/{name}",
                )
            run = await self._await_run(uid, dedupe)
        answer = TriggerOut(namespace=ns, task=name, triggerKey=key, executionId=run)
        return json(answer, status=200 if run is not None else 202)

    async def _await_run(self, uid: str, dedupe: str) -> int | None:
        ctx = self.ctx
        deadline = time.monotonic() + ctx.settings.trigger_wait_seconds
        pause = 0.02
        while True:
            run = await ctx.blocking(lambda: history.run_by_trigger(ctx.engine, uid, dedupe))
            if run is not None or time.monotonic() >= deadline:
                return run
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.25)

    async def _authorised(self, request: web.Request, verb: str,
                          body: TaskFields | None = None) -> tuple[str, str]:  # fmt: skip
        ctx = self.ctx
        await ctx.guard.identify(request)  # 401 before a bad name's 400 (cached: one review)
        ns = _field(lambda: mapping.namespace_name(ctx.namespace(request, _ns(body))))
        name = task_name(request)
        if body is not None and body.name is not None:
            named = _field(lambda: mapping.kube_name(body.name or ""))
            if named != name:
                raise Problem(400, f"names Task {named!r}, the URL {name!r}", "name")
        await ctx.guard.check(request, Access(verb, ns, name))
        return ns, name


def _ns(body: TaskFields | None) -> str | None:
    return None if body is None else body.namespace


def _in_state(spec: dict[str, Any], status: dict[str, Any], state: str) -> bool:
    if state in ("", "active", "suspended"):  # the field selector chose them already
        return True
    if state == "failing":
        return bool(status.get("consecutiveFailures"))
    if state == "running":
        return bool(status.get("active"))
    conditions = status.get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "False" for c in conditions)

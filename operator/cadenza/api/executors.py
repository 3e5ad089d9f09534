"""``/api/v1/executors``: executors outside the cluster register, heartbeat, change state and
deregister; anyone allowed lists and reads Executors with the health of their pods and endpoints.

Every route exists namespace-less (the namespace from the ``namespace`` query parameter, the
body's ``namespace``, else the API's default) and under ``/api/v1/namespaces/{namespace}``.

How an instance id finds its Executor: ``executor_heartbeats`` (one row per namespace and
instance id, written by the registration) names it; an endpoint written by hand (never
registered) is found by listing the namespace's Executors, and its row is written then.

Verbs on ``executors.cadenza.dev``: register = ``create`` (new Executor) or ``update`` (existing),
plus ``create``/``update`` on each Task it creates or joins; heartbeat, status and deregister =
``update`` on the instance's Executor (deregistering its last endpoint also ``delete``);
list = ``list``; get = ``get``.

Invariant: each handler authorises before it acts, then acts with the operator's identity; a
heartbeat costs one row write and no API-server write.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web

from cadenza.api import executor_views, mapping, parameters, registration
from cadenza.api.context import ApiContext, json
from cadenza.api.errors import Problem, parse, read_json
from cadenza.api.executor_models import (
    ExecutorList,
    HeartbeatBody,
    HeartbeatOut,
    RegisterBody,
    RegisterOut,
    StatusBody,
)
from cadenza.api.models import TaskBody
from cadenza.api.parameters import Instance
from cadenza.core.fields import FieldError
from cadenza.executors import endpoints, tokens
from cadenza.kube.reviews import Access
from cadenza.store import heartbeats

T = TypeVar("T")
_RESOURCE = "executors"
_WRITE_ATTEMPTS = 5


def routes(ctx: ApiContext) -> list[web.RouteDef]:
    h = _Handlers(ctx)
    table: list[web.RouteDef] = []
    for prefix in ("/api/v1", "/api/v1/namespaces/{namespace}"):
        table += [
            web.get(f"{prefix}/executors", h.list),
            web.post(f"{prefix}/executors/register", h.register),
            web.get(f"{prefix}/executors/{{name}}", h.get),
            web.post(f"{prefix}/executors/{{instance_id}}/heartbeat", h.heartbeat),
            web.put(f"{prefix}/executors/{{instance_id}}/status", h.status),
            web.delete(f"{prefix}/executors/{{instance_id}}", h.deregister),
        ]
    return table


def _field(read: Callable[[], T]) -> T:
    try:
        return read()
    except FieldError as exc:
        raise Problem(400, exc.reason, exc.field) from None


def _instance_id(raw: str, field: str) -> str:
    try:
        return parameters.an_instance_id(raw)
    except ValueError as exc:
        raise Problem(400, str(exc), field) from None


class _Handlers:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    # -- registration -------------------------------------------------------------------------

    async def register(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        await ctx.guard.identify(request)  # 401 before any other answer
        body: RegisterBody = parse(
            RegisterBody, await read_json(request, ctx.settings.max_body_bytes)
        )
        ns = _field(lambda: mapping.namespace_name(ctx.namespace(request, body.namespace)))
        name = _field(lambda: mapping.kube_name(body.name, "name"))
        instance = _instance_id(body.instance_id, "instance_id")
        _field(lambda: endpoints.url(body.base_url, "base_url", endpoints.BASE_URL))
        if body.health_check_url is not None:
            url = body.health_check_url
            _field(lambda: endpoints.url(url, "health_check_url", endpoints.HEALTH_URL))
        served = [
            _field(functools.partial(mapping.kube_name, t.task_name, f"tasks.{i}.task_name"))
            for i, t in enumerate(body.tasks)
        ]
        current = await self._executor_or_none(ns, name)
        await ctx.guard.check(
            request, Access("update" if current else "create", ns, name, _RESOURCE)
        )
        tasks = await self._tasks_to_write(request, ns, name, body, served)
        owner = await ctx.blocking(lambda: heartbeats.owner(ctx.engine, ns, instance))
        if owner not in (None, name):
            raise _taken(instance, owner, ns)
        if current is None:
            try:
                stored = await ctx.kube(
                    lambda: ctx.executors.create(ns, registration.new_executor(body, ns, name)),
                    f"namespace {ns}",
                )
                created = True
            except Problem as problem:
                if problem.status != 409:  # created meanwhile by another registration
                    raise
                stored, created = (
                    await self._update(ns, name, lambda e: registration.with_endpoint(e, body)),
                    False,
                )
        else:
            stored = await self._update(ns, name, lambda e: registration.with_endpoint(e, body))
            created = False
        owner = await ctx.blocking(
            lambda: heartbeats.record(ctx.engine, ns, instance, name, ctx.now())
        )
        if owner != name:  # claimed by another registration meanwhile
            raise _taken(instance, owner, ns)
        token = await self._token(stored)
        created_tasks = [t for t, body_task in tasks if body_task is not None]
        for task_name, new_task in tasks:
            await self._serve(ns, task_name, name, new_task)
        answer = RegisterOut(
            namespace=ns, executor=name, instanceId=instance, created=created, token=token,
            heartbeatSeconds=(stored.get("spec") or {}).get("heartbeatSeconds"),
            tasks=served, createdTasks=created_tasks,
        )  # fmt: skip
        return json(answer, status=201 if created else 200)

    async def _tasks_to_write(
        self, request: web.Request, ns: str, executor: str, body: RegisterBody, served: list[str]
    ) -> list[tuple[str, dict[str, Any] | None]]:
        """Each listed Task, with the manifest to create when it does not exist (None when it
        does); authorises ``create`` or ``update`` on each first, and checks new schedules."""
        ctx = self.ctx
        found: list[tuple[str, dict[str, Any] | None]] = []
        for i, (listed, task_name) in enumerate(zip(body.tasks, served, strict=True)):
            try:
                await ctx.kube(
                    functools.partial(ctx.tasks.get, ns, task_name), f"Task {ns}/{task_name}"
                )
                await ctx.guard.check(request, Access("update", ns, task_name))
                found.append((task_name, None))
                continue
            except Problem as problem:
                if problem.status != 404:
                    raise
            await ctx.guard.check(request, Access("create", ns, task_name))
            if listed.cron_expression is None:
                raise Problem(
                    400, f"Task {task_name!r} does not exist: give its cron_expression"
                    " to create it",
                    f"tasks.{i}.cron_expression",
                )  # fmt: skip
            task_body = TaskBody.model_validate(
                {"name": listed.task_name, "cron_expression": listed.cron_expression,
                 "execution_mode": "parallel", "load_balance_strategy": "round_robin"}
            )  # fmt: skip
            manifest = mapping.manifest(task_body, ns, executor)
            try:
                mapping.check(manifest["spec"], {"cron_expression"})
            except FieldError as exc:
                raise Problem(400, exc.reason, f"tasks.{i}.{exc.field}") from None
            found.append((task_name, manifest))
        return found

    async def _serve(
        self, ns: str, task: str, executor: str, manifest: dict[str, Any] | None
    ) -> None:
        ctx = self.ctx
        if manifest is not None:
            try:
                await ctx.kube(lambda: ctx.tasks.create(ns, manifest), f"namespace {ns}")
                return
            except Problem as problem:
                if problem.status != 409:  # created meanwhile: join it as below
                    raise
        for _ in range(_WRITE_ATTEMPTS):
            current = await ctx.kube(lambda: ctx.tasks.get(ns, task), f"Task {ns}/{task}")
            changed = registration.serving(current, executor)
            if changed is None:
                return
            try:
                await ctx.kube(
                    functools.partial(ctx.tasks.replace, ns, task, changed), f"Task {ns}/{task}"
                )
                return
            except Problem as problem:
                if problem.status != 409:
                    raise
        raise Problem(409, f"Task {ns}/{task} kept changing; register again")

    async def _token(self, executor: Mapping[str, Any]) -> str:
        """The Executor's dispatch token, from the Secret the operator makes and owns for it."""
        meta = executor["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        try:
            return await asyncio.to_thread(
                tokens.read_token, self.ctx.executors.token_secrets, ns, name, uid
            )
        except tokens.TokenUnavailable as exc:
            raise Problem(503 if not exc.permanent else 409, str(exc)) from None

    # -- one instance -------------------------------------------------------------------------

    async def heartbeat(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        await ctx.guard.identify(request)
        if request.can_read_body:
            raw = await read_json(request, ctx.settings.max_body_bytes)
            if raw is not None:
                parse(HeartbeatBody, raw)
        ns, instance, owner = await self._instance(request, "update")
        at = ctx.now()
        recorded = await ctx.blocking(
            lambda: heartbeats.record(ctx.engine, ns, instance, owner, at)
        )
        if recorded != owner:
            raise Problem(409, f"instance id {instance!r} now belongs to Executor {recorded!r}")
        return json(HeartbeatOut(namespace=ns, executor=owner, instanceId=instance, beatAt=at))

    async def status(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        await ctx.guard.identify(request)
        body: StatusBody = parse(StatusBody, await read_json(request, ctx.settings.max_body_bytes))
        ns, instance, owner = await self._instance(request, "update")
        state = registration.STATES[body.status]
        stored = await self._update(
            ns, owner, lambda e: registration.with_state(e, instance, state), instance
        )
        return json(executor_views.endpoint(stored, instance, {}))

    async def deregister(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        await ctx.guard.identify(request)
        ns, instance, owner = await self._instance(request, "update")
        for _ in range(_WRITE_ATTEMPTS):
            current = await ctx.kube(lambda: ctx.executors.get(ns, owner), f"Executor {ns}/{owner}")
            changed, empty = registration.without_endpoint(current, instance)
            try:
                if empty:
                    await ctx.guard.check(request, Access("delete", ns, owner, _RESOURCE))
                    await ctx.kube(
                        lambda: ctx.executors.delete(ns, owner), f"Executor {ns}/{owner}"
                    )
                elif registration.has_endpoint(current, instance):
                    await ctx.kube(
                        functools.partial(ctx.executors.replace, ns, owner, changed),
                        f"Executor {ns}/{owner}",
                    )
                break
            except Problem as problem:
                if problem.status not in (404, 409):
                    raise
                if problem.status == 404:
                    break
        else:
            raise Problem(409, f"Executor {ns}/{owner} kept changing; deregister again")
        await ctx.blocking(lambda: heartbeats.forget(ctx.engine, ns, instance))
        return web.Response(status=204)

    async def _instance(self, request: web.Request, verb: str) -> tuple[str, str, str]:
        """(namespace, instance id, Executor name), once the caller may ``verb`` that Executor;
        404 when no Executor of the namespace lists the instance id."""
        ctx = self.ctx
        ns = _field(lambda: mapping.namespace_name(ctx.namespace(request)))
        instance = parameters.read(Instance, request.match_info).instance_id
        owner = await ctx.blocking(lambda: heartbeats.owner(ctx.engine, ns, instance))
        if owner is None:
            await ctx.guard.check(request, Access("list", ns, "", _RESOURCE))
            listed = await ctx.kube(lambda: ctx.executors.list(ns), f"namespace {ns}")
            owner = next(
                (e["metadata"]["name"] for e in listed if registration.has_endpoint(e, instance)),
                None,
            )
            if owner is None:
                raise Problem(404, f"no Executor in namespace {ns} has instance {instance!r}")
        await ctx.guard.check(request, Access(verb, ns, owner, _RESOURCE))
        return ns, instance, owner

    async def _update(
        self,
        ns: str,
        name: str,
        change: Callable[[dict[str, Any]], dict[str, Any] | None],
        instance: str | None = None,
    ) -> dict[str, Any]:
        """Read, change and write the Executor at the version read, again on a conflict."""
        ctx = self.ctx
        for _ in range(_WRITE_ATTEMPTS):
            current = await ctx.kube(lambda: ctx.executors.get(ns, name), f"Executor {ns}/{name}")
            changed = change(current)
            if changed is None:
                raise Problem(404, f"Executor {ns}/{name} has no instance {instance!r}")
            try:
                return await ctx.kube(
                    functools.partial(ctx.executors.replace, ns, name, changed),
                    f"Executor {ns}/{name}",
                )
            except Problem as problem:
                if problem.status != 409:
                    raise
        raise Problem(409, f"Executor {ns}/{name} kept changing; try again")

    async def _executor_or_none(self, ns: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.ctx.kube(
                lambda: self.ctx.executors.get(ns, name), f"Executor {ns}/{name}"
            )
        except Problem as problem:
            if problem.status == 404:
                return None
            raise

    # -- reading ------------------------------------------------------------------------------

    async def list(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        await ctx.guard.identify(request)
        ns = _field(lambda: mapping.namespace_name(ctx.namespace(request)))
        await ctx.guard.check(request, Access("list", ns, "", _RESOURCE))
        listed = await ctx.kube(lambda: ctx.executors.list(ns), f"namespace {ns}")
        beats = await self._beats(ns)
        items = [
            executor_views.executor(e, beats)
            for e in sorted(listed, key=lambda e: e["metadata"]["name"])
        ]
        return json(ExecutorList(items=items))

    async def get(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        await ctx.guard.identify(request)
        ns = _field(lambda: mapping.namespace_name(ctx.namespace(request)))
        name = _field(lambda: mapping.kube_name(request.match_info["name"]))
        await ctx.guard.check(request, Access("get", ns, name, _RESOURCE))
        found = await ctx.kube(lambda: ctx.executors.get(ns, name), f"Executor {ns}/{name}")
        return json(executor_views.executor(found, await self._beats(ns)))

    async def _beats(self, ns: str) -> dict[tuple[str, str], Any]:
        ctx = self.ctx
        return await ctx.blocking(lambda: heartbeats.namespace_beats(ctx.engine, ns))


def _taken(instance: str, owner: str | None, ns: str) -> Problem:
    return Problem(
        409, f"instance id {instance!r} belongs to Executor {owner!r} in namespace {ns};"
        " deregister it there first", "instance_id",
    )  # fmt: skip

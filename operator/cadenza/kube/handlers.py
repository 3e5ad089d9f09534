"""The kopf handlers every replica registers: login, startup, indexes, event notifications and,
when enabled, the Tasks' validating admission webhook.

Only ``@kopf.index`` and ``@kopf.on.event`` handlers touch resources (DESIGN §4): they write
nothing to the objects, so there are no progress annotations, no finalizers and no fights between
replicas, and kopf needs no diff base (:class:`NoDiffBase`); the admission handler only answers
the API server. Each handler is a few lines that delegate to the hub or to ``admission``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

import kopf

from cadenza.kube import admission
from cadenza.kube.hub import EXECUTORS_INDEX, PODS_INDEX, TASKS_INDEX, Hub, Kind
from cadenza.kube.views import ExecutorView, PodView, TaskView
from cadenza.settings import Settings

GROUP, VERSION = "cadenza.dev", "v1alpha1"
V = TypeVar("V")

API_RETRY_BACKOFFS = (0.5, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0) + (5.0,) * 8
"""Seconds between kopf's retries of a failed API request (its lists and watches). kopf's default,
(1, 1, 2, 3, 5, 8, 13, 21), can leave a watch asleep for 21 s after an API server that restarted
is back, and every Task, Executor and pod change waits with it. Past the last retry kopf starts
the watch over, so while the API server is away a replica asks at most every 5 s."""


class NoDiffBase(kopf.DiffBaseStorage):
    """Keeps no diff base: kopf computes one for every event (a deep copy of the object, and a
    diff with the last stored), which only on.create/update/resume handlers use, and this
    registry has none. With thousands of Tasks whose status the leader writes, that copy was
    most of kopf's cost per event."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return cast(kopf.BodyEssence, {})

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def _key(body: kopf.Body) -> tuple[str, str]:
    meta = body["metadata"]
    return str(meta.get("namespace") or ""), str(meta["name"])


def telling(hub: Hub, kind: Kind, body: kopf.Body, view: Callable[[], V]) -> V:
    """``view()``, the value an index handler gives kopf, with the hub's subscribers told of the
    object whether it could be read or not.

    An index handler tells of its object itself: kopf stores what the handler returns before
    anything else runs on the loop, so a subscriber woken from here finds the object in the
    index as it is now (see :class:`Hub`). A second, on.event handler for every event cost kopf
    as much again; kopf calls no index handler for a deletion, so on.event handlers remain for
    deletions only."""
    try:
        return view()
    finally:
        hub.notify(kind, *_key(body))


def deletion(**kwargs: Any) -> bool:
    """The filter of the on.event handlers: a deletion (every other event is told by the index
    handlers)."""
    return bool(kwargs.get("type") == "DELETED")


def build_registry(settings: Settings, hub: Hub) -> kopf.OperatorRegistry:
    """A registry with Cadenza's handlers bound to ``hub``; nothing is registered globally."""
    registry = kopf.OperatorRegistry()
    webhook = settings.webhook  # the startup handler's `settings` argument is kopf's own

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if settings.kube.kubeconfig:
            return kopf.login_with_kubeconfig(**kwargs)
        return kopf.login_with_service_account(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
        settings.peering.standalone = True
        settings.posting.level = logging.WARNING
        settings.persistence.diffbase_storage = NoDiffBase()
        settings.watching.server_timeout = 300
        # An object's worker ends after this long without events. Every status write comes
        # back as an event, so with kopf's 5 s thousands of workers stayed alive after a burst
        # of applies: 28 MiB more on the leader with 10,000 Tasks (docs/benchmark.md).
        settings.queueing.idle_timeout = 1.0
        settings.watching.client_timeout = 330
        settings.networking.error_backoffs = API_RETRY_BACKOFFS
        hub.attach(kwargs)
        if webhook.enabled:
            admission.serve(settings, webhook)

    # Every handler tells the hub which object changed: the index handlers through `telling`.
    @kopf.index(GROUP, VERSION, "tasks", id=TASKS_INDEX, registry=registry)
    async def cadenza_tasks(body: kopf.Body, **_: Any) -> dict[tuple[str, str], TaskView]:
        ns, name = _key(body)
        view = telling(hub, "task", body, lambda: TaskView.from_body(body, hub.task(ns, name)))
        return {(view.namespace, view.name): view}

    @kopf.index(GROUP, VERSION, "executors", id=EXECUTORS_INDEX, registry=registry)
    async def cadenza_executors(body: kopf.Body, **_: Any) -> dict[tuple[str, str], ExecutorView]:
        view = telling(hub, "executor", body, lambda: ExecutorView.from_body(body))
        return {(view.namespace, view.name): view}

    @kopf.index("", "v1", "pods", id=PODS_INDEX, registry=registry)
    async def cadenza_pods(body: kopf.Body, **_: Any) -> dict[str, PodView]:
        view = telling(hub, "pod", body, lambda: PodView.from_body(body))
        return {view.namespace: view}

    @kopf.on.event(GROUP, VERSION, "tasks", when=deletion, registry=registry)
    async def task_deleted(namespace: str | None, name: str, **_: Any) -> None:
        hub.notify("task", namespace or "", name)

    @kopf.on.event(GROUP, VERSION, "executors", when=deletion, registry=registry)
    async def executor_deleted(namespace: str | None, name: str, **_: Any) -> None:
        hub.notify("executor", namespace or "", name)

    @kopf.on.event("", "v1", "pods", when=deletion, registry=registry)
    async def pod_deleted(namespace: str | None, name: str, **_: Any) -> None:
        hub.notify("pod", namespace or "", name)

    if webhook.enabled:  # kopf refuses to start with admission handlers but no server

        @kopf.on.validate(
            GROUP,
            VERSION,
            "tasks",
            id=admission.HANDLER_ID,
            operations=["CREATE", "UPDATE"],
            registry=registry,
        )
        async def validate_task(subresource: str | None, **kwargs: Any) -> None:
            # kopf's WebhookFn protocol does not declare operation/new/old; they come as kwargs.
            admission.check_task(kwargs["operation"], subresource, kwargs["new"], kwargs["old"])

    return registry

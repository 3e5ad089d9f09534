"""The kopf registry: only index, event, startup, login and admission handlers, which is what
lets the replicas tell kopf to keep no diff base (``NoDiffBase``); and the settings the startup
handler gives kopf."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, cast

import kopf
from kopf._cogs.structs import bodies, ephemera, references
from kopf._core.actions import lifecycles
from kopf._core.engines import indexing
from kopf._core.reactor import inventory, processing

from cadenza.kube.handlers import API_RETRY_BACKOFFS, NoDiffBase, build_registry, deletion
from cadenza.kube.hub import EXECUTORS_INDEX, PODS_INDEX, TASKS_INDEX, Hub
from cadenza.settings import Settings


def test_no_handler_needs_a_diff_base() -> None:
    plain = Settings.from_env({})
    with_webhook = dataclasses.replace(
        plain, webhook=dataclasses.replace(plain.webhook, enabled=True)
    )
    for settings in (plain, with_webhook):
        registry = build_registry(settings, Hub())
        # kopf's diff base serves only the changing (create/update/resume/delete) and spawning
        # (daemon, timer) handlers.
        assert list(registry._changing.get_all_handlers()) == []
        assert list(registry._spawning.get_all_handlers()) == []
        assert len(list(registry._indexing.get_all_handlers())) == 3
        assert len(list(registry._watching.get_all_handlers())) == 3


def test_the_diff_base_is_nothing() -> None:
    body = kopf.Body({"metadata": {"name": "t", "namespace": "ns"}, "spec": {"a": [1]}})
    storage = NoDiffBase()
    assert storage.fetch(body=body) is None
    assert storage.build(body=body) == {}


async def test_startup_settings_keep_no_diff_base_and_retry_the_api_server_often() -> None:
    registry = build_registry(Settings.from_env({}), Hub())
    handlers = registry._activities.get_all_handlers()
    (startup,) = [h for h in handlers if h.activity is not None and h.activity.value == "startup"]
    settings = kopf.OperatorSettings()
    indexes: dict[str, Any] = {k: {} for k in (TASKS_INDEX, EXECUTORS_INDEX, PODS_INDEX)}
    await startup.fn(settings=settings, **indexes)
    assert isinstance(settings.persistence.diffbase_storage, NoDiffBase)
    backoffs = list(settings.networking.error_backoffs)  # type: ignore[arg-type]
    assert backoffs == list(API_RETRY_BACKOFFS)
    assert max(backoffs) <= 5
    # Every status write comes back as an event: idle workers must not pile up per Task.
    assert settings.queueing.idle_timeout <= 1


def _task_event(kind: str | None, generation: int) -> dict[str, Any]:
    body = {
        "apiVersion": "cadenza.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"uid": "u-1", "namespace": "ns", "name": "t", "generation": generation},
        "spec": {"schedule": f"*/{generation} * * * *"},
    }
    return {"type": kind, "object": body}


async def test_a_woken_subscriber_finds_the_index_as_the_event_left_it() -> None:
    """The hub's invariant, held against kopf's own event processing: an index handler tells
    the subscribers before kopf stores its value, which is safe only because kopf stores it
    before anything else runs on the loop; a deletion is told once kopf dropped the object."""
    hub = Hub()
    registry = build_registry(Settings.from_env({}), hub)
    indexers = indexing.OperatorIndexers()
    indexers.ensure(registry._indexing.get_all_handlers())
    settings = kopf.OperatorSettings()
    (startup,) = [
        h
        for h in registry._activities.get_all_handlers()
        if h.activity is not None and h.activity.value == "startup"
    ]
    await startup.fn(settings=settings, **indexers.indices)
    resource = references.Resource("cadenza.dev", "v1alpha1", "tasks", namespaced=True)
    memories = inventory.ResourceMemories()
    changes = hub.subscribe("task")
    seen: list[int | None] = []

    async def subscriber() -> None:
        while True:
            await changes.wait()
            for _, namespace, name in changes.take():
                view = hub.task(namespace, name)
                seen.append(None if view is None else view.generation)

    watching = asyncio.create_task(subscriber())
    try:
        events = [_task_event(None, 1), _task_event("MODIFIED", 2), _task_event("MODIFIED", 3)]
        events.append(_task_event("DELETED", 3))
        for raw in events:
            await processing.process_resource_event(
                lifecycle=lifecycles.all_at_once,
                indexers=indexers,
                registry=registry,
                settings=settings,
                memories=memories,
                memobase=ephemera.Memo(),
                resource=resource,
                raw_event=cast(bodies.RawEvent, raw),
                event_queue=asyncio.Queue(),
                no_throttling=True,
            )
            for _ in range(3):  # the subscriber's turn
                await asyncio.sleep(0)
    finally:
        watching.cancel()
    assert seen == [1, 2, 3, None]
    # Only deletions reach the on.event handlers.
    for handler in registry._watching.get_all_handlers():
        assert handler.when is deletion

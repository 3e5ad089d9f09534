"""The kopf registry: only index, event, startup, login and admission handlers, which is what
lets the replicas tell kopf to keep no diff base (``NoDiffBase``); and the settings the startup
handler gives kopf."""

from __future__ import annotations

import dataclasses
from typing import Any

import kopf

from cadenza.kube.handlers import API_RETRY_BACKOFFS, NoDiffBase, build_registry
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

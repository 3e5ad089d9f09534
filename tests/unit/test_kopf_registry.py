"""The kopf registry: only index, event, startup, login and admission handlers, which is what
lets the replicas tell kopf to keep no diff base (``NoDiffBase``)."""

from __future__ import annotations

import dataclasses

import kopf

from cadenza.kube.handlers import NoDiffBase, build_registry
from cadenza.kube.hub import Hub
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

"""A subscriber of the hub is told of the kinds of object it asked for: the executor pool
re-reads every Executor and pod when told, and must not be woken by every Task event (each
status write comes back as one)."""

from __future__ import annotations

from cadenza.kube.hub import Hub


def test_a_subscriber_of_some_kinds_is_told_of_those_only() -> None:
    hub = Hub()
    pods = hub.subscribe("executor", "pod")
    everything = hub.subscribe()
    hub.notify("task", "ns", "t")
    assert not pods.is_set() and everything.take() == {("task", "ns", "t")}
    hub.notify("pod", "ns", "p")
    hub.notify("executor", "ns", "e")
    assert pods.is_set()
    assert pods.take() == everything.take() == {("pod", "ns", "p"), ("executor", "ns", "e")}


def test_an_unsubscribed_subscriber_is_told_nothing() -> None:
    hub = Hub()
    pods = hub.subscribe("pod")
    hub.unsubscribe(pods)
    hub.notify("pod", "ns", "p")
    assert not pods.is_set()

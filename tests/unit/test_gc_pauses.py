"""The collector's pauses as ``/metrics`` shows them (``cadenza_gc_pause_seconds``), recorded
with an injected clock: each collection lands in its generation's bucket, once."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from cadenza import collector
from cadenza.metrics import Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def collect(pauses: collector.Pauses, clock: Clock, generation: int, seconds: float) -> None:
    pauses.observe("start", {"generation": generation})
    clock.now += seconds
    pauses.observe("stop", {"generation": generation, "collected": 0, "uncollectable": 0})


def test_each_pause_is_counted_in_its_generation_and_bucket() -> None:
    clock = Clock()
    pauses = collector.Pauses(clock)
    collect(pauses, clock, 0, 0.0004)
    collect(pauses, clock, 0, 0.003)
    collect(pauses, clock, 2, 0.2)
    collect(pauses, clock, 2, 7.0)  # beyond the last bound: +Inf only
    registry = CollectorRegistry()
    registry.register(collector.PauseCollector(pauses))
    text = generate_latest(registry).decode()
    assert 'cadenza_gc_pause_seconds_bucket{generation="0",le="0.001"} 1.0' in text
    assert 'cadenza_gc_pause_seconds_bucket{generation="0",le="0.005"} 2.0' in text
    assert 'cadenza_gc_pause_seconds_count{generation="0"} 2.0' in text
    assert 'cadenza_gc_pause_seconds_bucket{generation="1",le="+Inf"} 0.0' in text
    assert 'cadenza_gc_pause_seconds_bucket{generation="2",le="0.1"} 0.0' in text
    assert 'cadenza_gc_pause_seconds_bucket{generation="2",le="0.25"} 1.0' in text
    assert 'cadenza_gc_pause_seconds_bucket{generation="2",le="2.5"} 1.0' in text
    assert 'cadenza_gc_pause_seconds_bucket{generation="2",le="+Inf"} 2.0' in text
    assert abs(pauses.sums[2] - 7.2) < 1e-9


def test_an_unknown_generation_is_not_counted() -> None:
    clock = Clock()
    pauses = collector.Pauses(clock)
    collect(pauses, clock, 3, 0.5)
    assert all(sum(counts) == 0 for counts in pauses.counts.values())


def test_every_replicas_metrics_serve_the_process_pauses() -> None:
    text = generate_latest(Metrics().registry).decode()
    for generation in collector.GENERATIONS:
        assert f'cadenza_gc_pause_seconds_count{{generation="{generation}"}}' in text

"""Prometheus metrics of one replica, served at ``/metrics``.

One registry per replica (not the library's global one), so tests can run several replicas in a
process without colliding. Label sets are bounded: task labels are ``namespace/name`` of Tasks
that exist, outcomes and reasons are small enums.

WARNING: a series labelled by Task or Executor lives only while its object exists and this
replica leads: the leader removes it when the object is deleted and when it stops leading (a
follower cannot tell which objects went). Whoever adds such a label removes its series in the
same places.

The Grafana dashboard and the PrometheusRule in ``charts/cadenza`` read these names, and
``tests/integration/test_observability.py`` holds them to what is served here: renaming one
means changing both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cadenza import collector

SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
"""Buckets of the histograms of delays and durations in seconds: 5 ms to 30 s."""


class TaskSeries(Collector):
    """The leader's two series labelled by Task, ``cadenza_task_status_writes_total`` and
    ``cadenza_task_consecutive_failures``, kept as two plain dicts from the ``task`` label
    (``namespace/name``) to the value.

    A labelled child of the client library costs about 480 bytes with its own lock: the two
    families held 9.6 MiB of the leader's memory with 10,000 Tasks (``docs/benchmark.md``),
    where these dicts hold about 2. Updated on the event loop only; collected in a worker
    thread (``/metrics``), which copies each dict in one step (atomic under the GIL).
    """

    def __init__(self) -> None:
        self._writes: dict[str, int] = {}
        self._failures: dict[str, int] = {}

    def written(self, task: str, consecutive_failures: int) -> None:
        """One status write of ``task``, which reported ``consecutive_failures``."""
        self._writes[task] = self._writes.get(task, 0) + 1
        self._failures[task] = consecutive_failures

    def remove(self, task: str) -> None:
        """Drop both series of ``task`` (gone, or no longer led here)."""
        self._writes.pop(task, None)
        self._failures.pop(task, None)

    def collect(self) -> Iterator[Metric]:
        writes = CounterMetricFamily(
            "cadenza_task_status_writes_total", "Task status patches, by task", labels=["task"]
        )
        for task, count in list(self._writes.items()):
            writes.add_metric([task], count)
        yield writes
        failures = GaugeMetricFamily(
            "cadenza_task_consecutive_failures",
            "Runs of the Task that failed in a row since its last success (its status's"
            " consecutiveFailures), by task",
            labels=["task"],
        )
        for task, streak in list(self._failures.items()):
            failures.add_metric([task], streak)
        yield failures


def _registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=_registry)

    def __post_init__(self) -> None:
        r = self.registry
        r.register(collector.PauseCollector())
        self.leader = Gauge("cadenza_leader", "1 while this replica leads", registry=r)
        self.epoch = Gauge("cadenza_leader_epoch", "Epoch this replica leads with", registry=r)
        self.fire_delay = Histogram(
            "cadenza_fire_delay_seconds",
            "From a tick's scheduled time to the pod's acceptance of its run",
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.start_delay = Histogram(
            "cadenza_start_delay_seconds",
            "From a tick's scheduled time to its run's start on the pod (the first attempt's"
            " startedAt), observed by the replica that applied the run's result",
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.ticks = Counter(
            "cadenza_ticks_total", "Ticks claimed, by decision", ["decision"], registry=r
        )
        self.dispatches = Counter(
            "cadenza_dispatches_total",
            "Dispatch attempts to pods, by outcome",
            ["outcome"],
            registry=r,
        )
        self.outcomes = Counter(
            "cadenza_runs_finished_total",
            "Runs finished, by final status",
            ["status"],
            registry=r,
        )
        self.retries = Counter("cadenza_retries_total", "Attempts scheduled again", registry=r)
        self.misfires = Counter(
            "cadenza_misfires_total",
            "Missed ticks, by what the policy did",
            ["action"],
            registry=r,
        )
        self.active = Gauge("cadenza_runs_active", "Runs dispatched and not finished", registry=r)
        self.queued = Gauge("cadenza_runs_queued", "Runs waiting for their turn", registry=r)
        self.dispatches_waiting = Gauge(
            "cadenza_dispatches_waiting",
            "Runs due to be sent that wait for one of the leader's dispatches in flight"
            " (CADENZA_MAX_DISPATCHES_IN_FLIGHT)",
            registry=r,
        )
        self.tasks = TaskSeries()
        r.register(self.tasks)
        self.status_waiting = Gauge(
            "cadenza_task_status_writes_waiting",
            "Task statuses waiting to be written, by lane: spec (answering a Task created or"
            " edited), runs (following firing); all 0 on a replica that does not lead",
            ["lane"],
            registry=r,
        )
        self.tasks_tracked = Gauge(
            "cadenza_leader_tasks_tracked",
            "Tasks the leader keeps state for, by part: plans (the scheduler), status (the status"
            " book), balance (load-balancer state); all 0 on a replica that does not lead",
            ["part"],
            registry=r,
        )
        self.pods_healthy = Gauge(
            "cadenza_executor_pods_healthy",
            "Pods (or outside endpoints) of the Executor that can take runs now, by executor",
            ["executor"],
            registry=r,
        )
        self.fenced = Counter(
            "cadenza_fenced_writes_total", "Leader writes refused for an old epoch", registry=r
        )
        self.store_lane = Histogram(
            "cadenza_store_lane_seconds",
            "Each operation of the leader's store lanes (a fenced transaction or a read), from"
            " its request to its answer, the wait for the lane's thread included, by lane",
            ["lane"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )

    def route(self) -> web.RouteDef:
        async def metrics(_: web.Request) -> web.Response:
            # Off the event loop: with 10,000 Tasks the per-Task series take some 80 ms to
            # render, which a scrape would otherwise take from a tick being handed over.
            body = await asyncio.to_thread(generate_latest, self.registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        return web.get("/metrics", metrics)

"""``cadenza_executor_pods_healthy``: the leader's pool, per Executor, as /metrics shows it; a
number only once measured, gone with its Executor and with the lead."""

from __future__ import annotations

import asyncio
import contextlib

from cadenza.executors import gauges
from cadenza.executors.members import ExecutorSnapshot, PodSnapshot
from cadenza.metrics import Metrics
from tests.support.waiting import until

GAUGE = "cadenza_executor_pods_healthy"


def pod(name: str, candidate: bool) -> PodSnapshot:
    return PodSnapshot(
        name=name, uid=f"uid-{name}", ip="127.0.0.9", phase="Running", ready=True,
        healthy=candidate, candidate=candidate, in_flight=0, last_probe_time=None,
        last_error=None, probes=1, failed_probes=0, consecutive_failures=0,
        consecutive_successes=1,
    )  # fmt: skip


def executor(name: str, *candidates: bool, settled: bool = True) -> ExecutorSnapshot:
    pods = tuple(pod(f"{name}-{i}", c) for i, c in enumerate(candidates))
    return ExecutorSnapshot(f"uid-{name}", "ns", name, 1, pods, None, settled)


def value(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(GAUGE, {"executor": f"ns/{name}"})


def test_counts_the_pods_that_can_take_runs_once_every_pod_was_probed() -> None:
    metrics = Metrics()
    shots = [executor("pool", True, False, True), executor("new", True, settled=False)]
    shown = gauges.show(shots, metrics.pods_healthy, set())
    assert shown == {"ns/pool"}
    assert value(metrics, "pool") == 2
    assert value(metrics, "new") is None  # not measured yet: no 0 to alert on

    shown = gauges.show(
        [executor("pool", False), executor("new", False)], metrics.pods_healthy, shown
    )
    assert (value(metrics, "pool"), value(metrics, "new")) == (0, 0)
    assert shown == {"ns/pool", "ns/new"}


def test_an_executor_that_went_loses_its_series() -> None:
    metrics = Metrics()
    shown = gauges.show([executor("a", True), executor("b", True)], metrics.pods_healthy, set())
    shown = gauges.show([executor("b", True)], metrics.pods_healthy, shown)
    assert shown == {"ns/b"}
    assert value(metrics, "a") is None
    assert value(metrics, "b") == 1


class Pool:
    """The pool's two readers: a snapshot, and a wait for the next update."""

    def __init__(self, *shots: ExecutorSnapshot) -> None:
        self.shots = list(shots)
        self.version = 0
        self.updated = asyncio.Condition()

    def snapshot(self) -> list[ExecutorSnapshot]:
        return list(self.shots)

    async def wait_updated(self, seen: int) -> int:
        async with self.updated:
            await self.updated.wait_for(lambda: self.version != seen)
        return self.version

    async def update(self, *shots: ExecutorSnapshot) -> None:
        async with self.updated:
            self.shots, self.version = list(shots), self.version + 1
            self.updated.notify_all()


async def test_publishes_every_update_and_removes_every_series_when_the_lead_ends() -> None:
    metrics, pool = Metrics(), Pool(executor("a", True, True))
    publishing = asyncio.create_task(gauges.publish(pool, metrics))  # type: ignore[arg-type]
    await until(lambda: value(metrics, "a") == 2, "the first snapshot")
    await pool.update(executor("a", True, False), executor("b", False))
    await until(lambda: (value(metrics, "a"), value(metrics, "b")) == (1, 0), "the update")
    publishing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await publishing
    assert (value(metrics, "a"), value(metrics, "b")) == (None, None)

"""The Executor gauges of ``/metrics``: healthy pods per Executor, as the leader's pool sees them.

Invariants:
- Published only for an Executor whose pods have all been probed once (``settled``): a new
  leader starts knowing no pod healthy, and a 0 it did not measure would page someone.
- At most one update every ``DEBOUNCE_SECONDS``: the pool updates on every dispatch and every
  finished run (its in-flight counts), hundreds of times a second, and building a snapshot for
  each cost the leader 3 % of its CPU at 200 runs a second; a health change shows within it.
- A series is labelled ``namespace/name`` and lives while its Executor does: one that leaves the
  pool loses its series at the pool's next update.

WARNING: a follower cannot tell which Executors still exist, so every series goes when the
leader stops publishing (it stops leading); only the leader's ``/metrics`` has them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from prometheus_client import Gauge

from cadenza.executors.members import ExecutorSnapshot
from cadenza.executors.pool import ExecutorPool
from cadenza.metrics import Metrics

DEBOUNCE_SECONDS = 0.5


async def publish(pool: ExecutorPool, metrics: Metrics) -> None:
    """Keep ``cadenza_executor_pods_healthy`` in step with ``pool`` until cancelled."""
    shown: set[str] = set()
    seen = -1
    try:
        while True:
            shown = show(pool.snapshot(), metrics.pods_healthy, shown)
            await asyncio.sleep(DEBOUNCE_SECONDS)  # what came meanwhile is shown at once below
            seen = await pool.wait_updated(seen)
    finally:
        for series in shown:
            metrics.pods_healthy.remove(series)


def show(snapshots: Sequence[ExecutorSnapshot], gauge: Gauge, shown: set[str]) -> set[str]:
    """Set the gauge for the settled ``snapshots`` and remove the series of Executors that went
    (of those in ``shown``); the series now shown."""
    live = {f"{s.namespace}/{s.name}" for s in snapshots}
    for series in shown - live:
        gauge.remove(series)
    now = {series for series in shown if series in live}
    for snapshot in snapshots:
        if snapshot.settled:
            series = f"{snapshot.namespace}/{snapshot.name}"
            gauge.labels(executor=series).set(snapshot.healthy_pods)
            now.add(series)
    return now

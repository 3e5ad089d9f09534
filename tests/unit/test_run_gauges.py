"""The leader's run metrics: ``cadenza_retries_total`` counts a retry whoever decided it (the
leader, or the replica whose callback API took the failed result), and ``cadenza_runs_active``
and ``cadenza_runs_queued`` read 0 on a replica whose lead ended, so a sum over the replicas (as
the dashboard draws it) counts each run once."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

from cadenza.core import runs as rules
from cadenza.core.transitions import RunStatus
from cadenza.metrics import Metrics
from cadenza.store.memory import MemoryRunStore
from tests.unit.test_cancel_during_dispatch import HeldPod, lifecycle_over, sent_run, until


async def test_a_retry_decided_on_the_callback_path_is_counted_once() -> None:
    store, metrics, pod = MemoryRunStore(), Metrics(), HeldPod()
    pod.answer.set()
    lifecycle = lifecycle_over(store, pod, metrics)
    retries = metrics.registry.get_sample_value
    async with sent_run(store, lifecycle, max_attempts=3) as run:
        await until(lambda: store.runs[run].status is RunStatus.RUNNING, "the pod to take it")
        # What the callback API does with a failed result while attempts remain.
        failed = rules.Outcome(RunStatus.FAILED, error="handler failed")
        later = datetime.now(UTC) + timedelta(hours=1)
        assert await store.end_attempt(run, 1, rules.Retry(failed, later))
        store.record_change(run)
        lifecycle.wake(run)
        await until(lambda: retries("cadenza_retries_total") == 1, "the retry counted")
        lifecycle.wake(run)  # read once more: not counted again
        await asyncio.sleep(0.2)
        assert retries("cadenza_retries_total") == 1


async def test_the_run_gauges_read_zero_once_the_lead_ends() -> None:
    store, metrics = MemoryRunStore(), Metrics()
    lifecycle = lifecycle_over(store, None, metrics)
    metrics.active.set(4)  # as counted while it led
    metrics.queued.set(2)
    looping = asyncio.create_task(lifecycle.run())
    await asyncio.sleep(0.05)
    looping.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await looping
    value = metrics.registry.get_sample_value
    assert (value("cadenza_runs_active"), value("cadenza_runs_queued")) == (0, 0)

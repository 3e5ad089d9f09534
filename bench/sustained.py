"""The sustained scenario (the default of ``bench/run.py``): ``--tasks`` Tasks firing every
second for ``--seconds`` seconds. Its figures come from MySQL's history, the leader's ``/metrics``
and ``/proc``; the headline, beside the fire delay percentiles, is the leader's CPU milliseconds
per run (``sustained`` in the JSON). docs/benchmark.md says what each field means.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from datetime import UTC, datetime
from typing import Any

import history
import plotting
import procstats
from cadenza.devenv import controlplane as cp
from measuring import Measurement, resources, say, sleep_until, utc
from system import NAMESPACE, System, task_manifest


def wait_first_ticks(system: System, tasks: int, timeout: float = 60) -> None:
    def every_task_fired() -> bool:
        with system.db() as conn, conn.cursor() as cur:
            cur.execute("SELECT COUNT(DISTINCT task_uid) FROM task_executions")
            row = cur.fetchone()
        return bool(row and row[0] >= tasks)

    cp.wait_until(every_task_fired, timeout, f"every one of {tasks} Tasks to fire", interval=0.2)


def progress(system: System) -> str:
    """Runs by status and the replicas' roles, for the progress lines on stderr."""
    with system.db() as conn, conn.cursor() as cur:
        cur.execute("SELECT status, COUNT(*) FROM task_executions GROUP BY status")
        counts = dict(cur.fetchall())
    roles = ", ".join(f"{r.name}={r.role}" for r in system.replicas)
    return f"runs by status {counts}; {roles}"


def delta(after: dict[str, float], before: dict[str, float], name: str) -> float:
    return history.metric_total(after, name) - history.metric_total(before, name)


def leader_metrics(
    before: dict[str, float], after: dict[str, float], tasks: int, seconds: float
) -> dict[str, Any]:
    """What the leader's /metrics counted between the two scrapes of the steady window."""
    writes = delta(after, before, "cadenza_task_status_writes_total")
    count = delta(after, before, "cadenza_fire_delay_seconds_count")
    total = delta(after, before, "cadenza_fire_delay_seconds_sum")

    def by_label(name: str) -> dict[str, float]:
        old = history.metric_by_label(before, name)
        return {k: v - old.get(k, 0.0) for k, v in history.metric_by_label(after, name).items()}

    return {
        "status_writes_per_task_per_minute": round(writes / tasks / (seconds / 60), 2),
        "status_writes_total": writes,
        "fire_delay_to_acceptance": {
            "count": count,
            "mean_ms": round(total / count * 1000, 1) if count else None,
        },
        "dispatches": by_label("cadenza_dispatches_total"),
        "ticks": by_label("cadenza_ticks_total"),
        "runs_finished": by_label("cadenza_runs_finished_total"),
        "fenced_writes": delta(after, before, "cadenza_fenced_writes_total"),
        "gc_pause_seconds": round(delta(after, before, "cadenza_gc_pause_seconds_sum"), 3),
        "gc_collections": by_label("cadenza_gc_pause_seconds_count"),
        "store_lanes": store_lanes(before, after),
    }


def store_lanes(before: dict[str, float], after: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Per lane of the leader's store, its operations in the window: how many, their mean and
    how many took longer than 100 ms (from ``cadenza_store_lane_seconds``)."""
    name = "cadenza_store_lane_seconds"
    lanes = {}
    for lane in ("fire", "books"):
        count = delta(after, before, f'{name}_count{{lane="{lane}"}}')
        total = delta(after, before, f'{name}_sum{{lane="{lane}"}}')
        quick = delta(after, before, f'{name}_bucket{{lane="{lane}",le="0.1"}}')
        lanes[lane] = {
            "operations": count,
            "mean_ms": round(total / count * 1000, 1) if count else None,
            "over_100ms": count - quick,
        }
    return lanes


def drain(system: System, end: datetime, timeout: float = 30) -> int:
    """Wait for the window's runs to finish; the number still open at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        with system.db() as conn:
            still_open = history.open_in_window(conn, NAMESPACE, end)
        if still_open == 0 or time.monotonic() > deadline:
            return still_open
        time.sleep(0.5)


def leader_cpu_per_run(
    samples: list[procstats.Sample], rows: list[history.Row], start: float, end: float
) -> dict[str, Any]:
    """The leader's CPU time over the window divided by the runs that finished in it.

    Both are taken between the first and the last /proc sample inside the window, so the CPU
    and the runs it paid for cover the same seconds. It moves little with other load on the
    machine (a starved leader is slower, not costlier), hence the headline.
    """
    inside = [s for s in samples if start <= s.at <= end]
    if len(inside) < 2:
        return {"leader_cpu_ms_per_run": None}
    first, last = inside[0], inside[-1]
    cpu = last.cpu_seconds - first.cpu_seconds
    finished = sum(
        1
        for r in rows
        if r.finished_at is not None
        and first.at <= r.finished_at.replace(tzinfo=UTC).timestamp() < last.at
    )
    return {
        "leader_cpu_ms_per_run": round(cpu * 1000 / finished, 2) if finished else None,
        "leader_cpu_seconds": round(cpu, 2),
        "runs_finished": finished,
        "measured_over_seconds": round(last.at - first.at, 1),
    }


def sustained_figures(
    system: System,
    sampler: procstats.Sampler,
    leader: str,
    rows: list[history.Row],
    window: tuple[float, float],
) -> dict[str, Any]:
    """The fields under ``sustained``: leader CPU per run and the delay where the run arrives."""
    start, end = utc(window[0]), utc(window[1])
    calls = history.read_calls(p.ledger for p in system.pods)
    return leader_cpu_per_run(sampler.samples.get(leader, []), rows, *window) | {
        "leader": leader,
        "fire_delay_at_sidecar": history.distribution(history.at_sidecar(rows, start, end)),
        "fire_delay_at_app": history.distribution(history.at_app(calls, start, end)),
        "slowest_ticks": history.slowest_ticks(rows, start, end),
        "receive_time_source": (
            "fire_delay_at_sidecar: startedAt, stamped by the sidecar when it admits the run and"
            " sent back in the callback (history's started_at); fire_delay_at_app: the demo"
            " app's ledger time for the run's first attempt"
        ),
    }


def run_and_analyse(
    system: System, args: argparse.Namespace
) -> tuple[dict[str, Any], plotting.PlotData]:
    """Apply the Tasks, let them run, and compute the result (and what the plot draws)."""
    leader = system.leader()
    sampler = system.sampler()

    say(f"applying {args.tasks} Tasks firing every second")
    system.apply(*(task_manifest(i) for i in range(args.tasks)))
    applied = time.time()
    wait_first_ticks(system, args.tasks)
    fired = math.floor(time.time())
    say(f"every Task fired within {time.time() - applied:.1f}s of the apply")

    window_start = fired + 1 + args.warmup
    sleep_until(window_start, lambda: progress(system))
    before = system.leader().metrics()
    scraped_at = time.time()
    sleep_until(applied + args.seconds, lambda: progress(system))
    after = system.leader().metrics()
    scrape_span = time.time() - scraped_at
    window_end = math.floor(time.time()) - 1
    if system.leader() is not leader:
        say("WARNING: the leader changed during the run")
    start, end = utc(window_start), utc(window_end)
    say(f"steady window {start:%H:%M:%S} .. {end:%H:%M:%S} UTC; waiting for its runs to finish")
    unfinished = drain(system, end)
    sampler.stop()
    with system.db() as conn:
        rows = history.fetch_rows(conn, NAMESPACE)

    result = history.analyse(rows, args.tasks, start, end)
    result["ticks"]["unfinished_after_drain"] = unfinished
    result["ticks"]["executed_twice_by_pods"] = history.executed_twice(
        p.ledger for p in system.pods
    )
    result["leader_metrics"] = leader_metrics(before, after, args.tasks, scrape_span)
    result["resources"] = resources(sampler, float(window_start), float(window_end))
    result["window"] = {
        "start": start.isoformat() + "Z",
        "end": end.isoformat() + "Z",
        "seconds": window_end - window_start + 1,
        "warmup_seconds": args.warmup,
    }
    window = (float(window_start), float(window_end))
    result["sustained"] = sustained_figures(system, sampler, leader.name, rows, window)
    result["sustained"]["settling"] = history.settling(rows, utc(fired), utc(window_start - 1))
    plot = plotting.PlotData(
        fire=history.series(rows, start, end),
        end_to_end=history.end_to_end(rows, start, end),
        samples=sampler.samples,
        window=window,
        at_sidecar=history.series(rows, start, end, "started_at"),
    )
    return result, plot


def measure(system: System, args: argparse.Namespace) -> Measurement:
    result, plot = run_and_analyse(system, args)
    title = (
        f"Cadenza bench: {args.tasks} Tasks every 1 s, {args.pods} pods, "
        f"{args.replicas} replicas, {os.cpu_count()} cores"
    )
    return Measurement(result, lambda path, _: plotting.draw(path, plot, title), "* * * * * *")

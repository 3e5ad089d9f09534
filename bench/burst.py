"""The burst scenario: N Tasks due in the same second, and how long until the last run is sent.

Every Task gets ``0 * * * * *`` (second 0 of every minute). Once all are mirrored, the benchmark
picks the measured tick: the next whole minute at least ``MARGIN`` seconds away, with no run
open (so the previous minute's burst, if the Tasks already fired, is over). It reads the leader's
CPU just before the tick's first claims (a crowded tick is claimed in waves up to
``CADENZA_CLAIM_AHEAD_MAX_SECONDS`` ahead) and after the tick's last run finished, waits for
every run of the tick to end, and reports that tick alone: time to the last dispatch, the delay
distributions at the leader, the sidecar and the application, and that every Task has exactly
one run for it.

Limits: the Tasks fire every minute, so a burst that takes over a minute overlaps the next
one's (``next_tick_before_done`` says so); the delays are MySQL ``DATETIME(3)`` stamps, ms.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from typing import Any

import history
import kubeapi
import plotting
import procstats
from measuring import Measurement, resources, say, utc, wait_for
from system import NAMESPACE, System, cpu_seconds, task_manifest

SCHEDULE = "0 * * * * *"
TERMINAL = tuple(history.TERMINAL)
LEAD = float(os.environ.get("CADENZA_CLAIM_AHEAD_MAX_SECONDS", "8"))
"""How far ahead of the tick the leader claims its first runs (the replicas' setting)."""
BEFORE = LEAD + 1.0
"""Seconds before the tick from which the leader's CPU and the machine's are counted."""
MARGIN = BEFORE + 4.0
"""Seconds between choosing the tick and the tick: before the first claims of it."""


def wait_mirrored(system: System, tasks: int, timeout: float) -> float | None:
    """When every Task had its row in MySQL's ``tasks`` (None on timeout)."""
    return wait_for(lambda: system.mirrored() >= tasks, timeout, f"{tasks} Tasks mirrored")


def quiet_tick(system: System, timeout: float) -> tuple[float, int]:
    """The next whole minute at least MARGIN s away with no run open; and runs open then.

    After ``timeout`` it settles for the next minute whatever is open, and says so.
    """
    deadline = time.time() + timeout
    while True:
        wait_for(lambda: system.open_runs() == 0, max(deadline - time.time(), 1), "no open run")
        now = time.time()
        tick = math.floor(now / 60) * 60 + 60.0
        if tick - now >= MARGIN or now > deadline:
            return tick, system.open_runs()
        # Too close: that minute's runs would still be leaving. Let them, then look again.
        time.sleep(tick - now + 1)


def tick_done(system: System, tick: float, tasks: int) -> bool:
    """Every Task's run for ``tick`` ended; or, once the next tick passed, every run claimed.

    A Task with no run by the next minute never gets one (the scheduler has moved on): it is
    reported as lost instead of being waited for until the timeout.
    """
    query = (
        "SELECT COUNT(*) FROM task_executions WHERE namespace = %s AND scheduled_at = %s"
        " AND origin = 'schedule'"
    )
    finished = system.count(query + " AND status IN %s", NAMESPACE, utc(tick), TERMINAL)
    if finished >= tasks:
        return True
    return time.time() > tick + 60 and finished == system.count(query, NAMESPACE, utc(tick))


def cpu_bill(sampler: procstats.Sampler, start: float, end: float) -> dict[str, Any]:
    """What every watched process spent from ``start`` to ``end`` (the samples around them, so
    up to a second more each side), their sum, and what the machine's cores could give."""
    spent = {
        name: used
        for name, samples in sorted(sampler.samples.items())
        if (used := procstats.spent(samples, start, end)) is not None
    }
    firsts = [s.at for samples in sampler.samples.values() for s in samples if s.at <= start]
    lasts = [s.at for samples in sampler.samples.values() for s in samples if s.at >= end]
    seconds = (min(lasts) - max(firsts)) if firsts and lasts else end - start
    return {
        "window_seconds": round(seconds, 2),
        "cores_seconds_available": round(seconds * (os.cpu_count() or 1), 2),
        "cpu_seconds_total": round(sum(u["cpu_seconds"] for u in spent.values()), 2),
        "threads_cpu_wait_seconds_total": round(
            sum(u["threads_cpu_wait_seconds"] for u in spent.values()), 2
        ),
        "per_process": spent,
    }


def measure(system: System, args: argparse.Namespace) -> Measurement:
    sampler = system.sampler()
    api = system.api()
    say(f"creating {args.tasks} Tasks on {SCHEDULE!r}")
    applied = kubeapi.create_all(api, [task_manifest(i, SCHEDULE) for i in range(args.tasks)])
    say(f"created in {applied.seconds:.1f}s; waiting until all are mirrored")
    mirrored = wait_mirrored(system, args.tasks, args.timeout)
    tick, open_then = quiet_tick(system, args.timeout)
    leader = system.leader()
    say(f"measuring the tick at {utc(tick):%H:%M:%S} UTC ({open_then} runs open)")
    time.sleep(max(tick - BEFORE - time.time(), 0))
    cpu_before = cpu_seconds(leader)
    done = wait_for(
        lambda: tick_done(system, tick, args.tasks),
        args.timeout,
        f"every run of the tick at {utc(tick):%H:%M:%S} to finish",
        interval=0.2,
    )
    # A burst that timed out gets no CPU figure rather than one for an unfinished job.
    cpu_after = cpu_seconds(leader) if done else None
    end = done or time.time()
    time.sleep(2)  # a couple of /proc samples after the end, for the resources and the plot
    if system.leader() is not leader:
        say("WARNING: the leader changed during the burst")
    with system.db() as conn:
        rows = history.fetch_rows(conn, NAMESPACE)
    calls = history.read_calls(p.ledger for p in system.pods)
    figures = history.one_tick(rows, calls, args.tasks, utc(tick))
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    figures |= {
        "apply": applied.summary(),
        "mirrored_seconds_after_last_apply": (
            None if mirrored is None else round(mirrored - applied.last, 1)
        ),
        "runs_open_when_tick_chosen": open_then,
        "done_seconds_after_tick": None if done is None else round(done - tick, 2),
        "next_tick_before_done": done is None or done > tick + 60,
        "leader": leader.name,
        "leader_cpu_seconds": None if cpu is None else round(cpu, 2),
        "leader_cpu_ms_per_run": None if cpu is None else round(cpu * 1000 / args.tasks, 2),
        "executed_twice_by_pods": history.executed_twice(p.ledger for p in system.pods),
    }
    at = utc(tick)
    due = [r for r in rows if r.origin == "schedule" and r.scheduled_at == at]
    delays = {
        "dispatched (leader)": [
            (r.dispatched_at - at).total_seconds() for r in due if r.dispatched_at
        ],
        "accepted (sidecar)": history.at_sidecar(due, at, at),
        "received (app)": history.at_app(calls, at, at),
        "finished": [(r.finished_at - at).total_seconds() for r in due if r.finished_at],
    }
    window = (tick, end)
    figures["cpu_during_tick"] = cpu_bill(sampler, tick - BEFORE, end)
    result: dict[str, Any] = {
        "burst": figures,
        "resources": resources(sampler, tick - BEFORE - 4, end + 2),
    }
    say(
        f"last dispatch {figures['last_dispatch_ms']} ms after the tick; lost {figures['lost']},"
        f" duplicated {figures['duplicated']}; leader {figures['leader_cpu_ms_per_run']} ms/run"
    )

    def draw(path: Any, machine: str) -> None:
        title = f"Cadenza burst: {args.tasks} Tasks due at {utc(tick):%H:%M:%S} UTC, {machine}"
        plotting.draw_burst(path, title, delays, sampler.samples, window)

    return Measurement(result, draw, SCHEDULE)

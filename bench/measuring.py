"""What every scenario shares to measure: how it reports (:func:`say`), what it hands back
(:class:`Measurement`), waits that report a timeout instead of raising (:func:`wait_for`), the
per-process resource summary (:func:`resources`) and the check that nothing was left running
(:func:`leftovers`, including any child in the process group of something we started).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import procstats

_T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[bench {time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def utc(ts: float) -> datetime:
    """A ``time.time()`` value as the naive UTC datetime MySQL's DATETIME(3) columns hold."""
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)


@dataclass
class Measurement:
    """What a scenario measured: fields for the top level of the JSON, and how to draw it."""

    result: dict[str, Any]
    draw: Callable[[Path, str], None]
    schedule: str
    """The schedule every Task (and CronJob) was given, for the JSON's ``config``."""


def sleep_until(deadline: float, progress: Callable[[], str], report_every: float = 10.0) -> None:
    """Sleep until ``deadline`` (``time.time()``), saying ``progress()`` every ``report_every``."""
    while (left := deadline - time.time()) > 0:
        time.sleep(min(left, report_every))
        say(f"{progress()}; {max(0.0, deadline - time.time()):.0f}s left")


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.5
) -> float | None:
    """When ``condition`` first held (``time.time()``), or None if ``timeout`` passed first.

    Unlike ``cp.wait_until`` it does not raise: a scenario that times out still reports what
    it saw, with the missing figure as null.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return time.time()
        time.sleep(interval)
    say(f"WARNING: gave up after {timeout:.0f}s waiting for {what}")
    return None


def resources(sampler: procstats.Sampler, start: float, end: float) -> dict[str, Any]:
    """CPU and RSS of every watched process over the window; the replicas by their role."""
    roles = {
        name: Counter(s.role for s in samples if start <= s.at <= end).most_common(1)[0][0]
        for name, samples in sampler.samples.items()
        if name.startswith("replica") and any(start <= s.at <= end for s in samples)
    }
    per_process = {
        name: procstats.summarize(samples, start, end)
        | ({"role": roles[name]} if name in roles else {})
        for name, samples in sorted(sampler.samples.items())
    }
    leader = [per_process[n] for n, role in roles.items() if role == "leader"]
    followers = [per_process[n] for n, role in roles.items() if role == "follower"]
    busy = procstats.machine_busy(sampler.machine, start, end)
    cores = os.cpu_count() or 1
    ours = sum(p["cpu_cores_mean"] or 0.0 for p in per_process.values())
    return {
        "leader": leader[0] if len(leader) == 1 else None,
        "followers": followers,
        "cores": cores,
        "machine_cpu_busy_fraction": None if busy is None else round(busy, 3),
        # Whatever else ran on the machine meanwhile (other test runs share it and MariaDB).
        "other_processes_cpu_cores": None if busy is None else round(busy * cores - ours, 3),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "per_process": per_process,
    }


def leftovers(pids: list[int]) -> list[str]:
    """Processes still alive that we started, or in the process group of one we started."""
    groups = set(pids)
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        state, pgid = fields[0], int(fields[2])
        if state != "Z" and (int(entry) in groups or pgid in groups):
            alive.append(f"{entry} {stat[stat.index('(') : stat.rindex(')') + 1]}")
    return alive

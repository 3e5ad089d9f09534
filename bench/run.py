"""Cadenza's benchmark: many one-second Tasks on a whole local system, measured end to end.

    .venv/bin/python bench/run.py [--tasks 50] [--seconds 60] [--pods 3] [--replicas 2]
                                  [--out bench/out]

It starts a real kube-apiserver + etcd, a scratch database on the local MariaDB, ``--pods``
executor pods (real sidecar + demo app processes on 127.0.3.x), ``--replicas`` operator replicas
(``python -m cadenza operator``), then applies one Executor and ``--tasks`` Tasks that fire every
second (``* * * * * *``, handler ``echo``) and lets them run ``--seconds`` seconds while it samples
CPU and RSS from ``/proc``. The numbers come from MySQL's history and the leader's ``/metrics``
(see docs/benchmark.md for what each one means). It prints one JSON document to stdout, writes it
to ``<out>/result.json``, draws ``<out>/fire_delay.png`` when matplotlib is installed and keeps
the processes' logs in ``<out>/logs/``. Progress goes to stderr.

Invariant: everything it starts is stopped before it exits, also on failure or Ctrl-C, and it
checks that no process it started (or any child of one) is left; the result says so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import history
import plotting
import procstats
from cadenza.devenv import controlplane as cp
from system import NAMESPACE, REPO, System, leftovers, say, task_manifest, utc

# -- the measurement ----------------------------------------------------------------------------


def wait_first_ticks(system: System, tasks: int, timeout: float = 60) -> None:
    def every_task_fired() -> bool:
        with system.db() as conn, conn.cursor() as cur:
            cur.execute("SELECT COUNT(DISTINCT task_uid) FROM task_executions")
            row = cur.fetchone()
        return bool(row and row[0] >= tasks)

    cp.wait_until(every_task_fired, timeout, f"every one of {tasks} Tasks to fire", interval=0.2)


def sleep_until(deadline: float, system: System, report_every: float = 10.0) -> None:
    """Sleep until ``deadline`` (time.time()), reporting progress every ``report_every`` s."""
    while (left := deadline - time.time()) > 0:
        time.sleep(min(left, report_every))
        with system.db() as conn, conn.cursor() as cur:
            cur.execute("SELECT status, COUNT(*) FROM task_executions GROUP BY status")
            counts = dict(cur.fetchall())
        roles = ", ".join(f"{r.name}={r.role}" for r in system.replicas)
        say(f"runs by status {counts}; {roles}; {max(0.0, deadline - time.time()):.0f}s left")


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
    }


def drain(system: System, end: datetime, timeout: float = 30) -> int:
    """Wait for the window's runs to finish; the number still open at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        with system.db() as conn:
            still_open = history.open_in_window(conn, NAMESPACE, end)
        if still_open == 0 or time.monotonic() > deadline:
            return still_open
        time.sleep(0.5)


def log_findings(paths: list[Path], examples: int = 6) -> dict[str, Any]:
    """Warnings and errors per log file, with the most frequent messages."""
    found: dict[str, Any] = {}
    for path in sorted(paths):
        levels: Counter[str] = Counter()
        messages: Counter[str] = Counter()
        for line in path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
                level = str(entry.get("level", "")).lower()
                message = str(entry.get("message") or entry.get("msg") or entry.get("event"))
            except (ValueError, AttributeError):
                level, message = ("error", line) if "Traceback" in line else ("", "")
            levels[level] += 1
            if level in ("warning", "error", "critical"):
                messages[f"{level}: {message[:220]}"] += 1
        bad = {k: levels[k] for k in ("warning", "error", "critical") if levels[k]}
        if bad:
            found[path.name] = {"counts": bad, "top": dict(messages.most_common(examples))}
    return found


def measure(system: System, args: argparse.Namespace) -> tuple[dict[str, Any], plotting.PlotData]:
    """Apply the Tasks, let them run, and compute the result (and what the plot draws)."""
    leader = system.leader()
    sampler = procstats.Sampler(
        system.watched_processes(),
        role_of=lambda name: next(
            (r.refresh_role() for r in system.replicas if r.name == name), name
        ),
    )
    sampler.start()
    system.stack.callback(sampler.stop)

    say(f"applying {args.tasks} Tasks firing every second")
    system.apply(*(task_manifest(i) for i in range(args.tasks)))
    applied = time.time()
    wait_first_ticks(system, args.tasks)
    say(f"every Task fired within {time.time() - applied:.1f}s of the apply")

    window_start = math.ceil(time.time()) + args.warmup
    sleep_until(window_start, system)
    before = system.leader().metrics()
    scraped_at = time.time()
    sleep_until(applied + args.seconds, system)
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
    plot = plotting.PlotData(
        fire=history.series(rows, start, end),
        end_to_end=history.end_to_end(rows, start, end),
        samples=sampler.samples,
        window=(float(window_start), float(window_end)),
    )
    return result, plot


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


# -- the command --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50, help="Tasks firing every second (50)")
    parser.add_argument("--seconds", type=int, default=60, help="seconds to let them run (60)")
    parser.add_argument("--pods", type=int, default=3, help="executor pods (3)")
    parser.add_argument("--replicas", type=int, default=2, help="operator replicas (2)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="bench/out")
    parser.add_argument(
        "--warmup", type=int, default=5, help="seconds after every Task fired before measuring (5)"
    )
    parser.add_argument(
        "--pod-concurrency",
        type=int,
        default=32,
        help="sidecar --max-concurrency and the Executor's maxConcurrencyPerPod (32)",
    )
    args = parser.parse_args(argv)
    if args.seconds < args.warmup + 15:
        parser.error(f"--seconds must leave at least 15 s after the {args.warmup} s warm-up")
    for name in ("tasks", "pods", "replicas"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so the cleanup runs as for Ctrl-C."""

    def raise_interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class Outcome:
    measured: dict[str, Any]
    plot: plotting.PlotData
    exits: dict[str, dict[str, Any]]
    leftovers: list[str]


def run(args: argparse.Namespace, out: Path) -> Outcome:
    """Start, measure, stop, and check that nothing is left running."""
    workdir = Path(tempfile.mkdtemp(prefix="cadenza-bench-"))
    system: System | None = None
    try:
        with contextlib.ExitStack() as stack:
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
            system = System(args, workdir, out, stack)
            system.start()
            measured, plot = measure(system, args)
            say("stopping everything")
    finally:
        left = leftovers(system.pids) if system else []
        say(f"stopped; processes left: {left or 'none'}")
    return Outcome(measured, plot, system.exits, left)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with interruptible():
            outcome = run(args, out)
    except KeyboardInterrupt:
        say("interrupted; no result written")
        return 130
    result = {
        "config": {
            "tasks": args.tasks,
            "seconds": args.seconds,
            "pods": args.pods,
            "replicas": args.replicas,
            "pod_concurrency": args.pod_concurrency,
            "schedule": "* * * * * *",
            "handler": "echo",
            "operator_settings": "defaults (docs/configuration.md)",
        },
        **outcome.measured,
        "replica_exits": outcome.exits,
        # Cadenza's own logs (JSON lines); the control plane's are kept but only start-up noise.
        "log_findings": log_findings(
            [*(out / "logs").glob("replica-*.log"), *(out / "logs").glob("bench-pool-*.log")]
        ),
        "leftover_processes": outcome.leftovers,
        "plot": None,
    }
    if plotting.available():
        path = out / "fire_delay.png"
        title = (
            f"Cadenza bench: {args.tasks} Tasks every 1 s, {args.pods} pods, "
            f"{args.replicas} replicas, {os.cpu_count()} cores"
        )
        plotting.draw(path, outcome.plot, title)
        result["plot"] = str(path)
    else:
        say("matplotlib is not installed: no plot (pip install matplotlib)")
    text = json.dumps(result, indent=2, default=str)
    (out / "result.json").write_text(text + "\n")
    print(text)
    return 1 if outcome.leftovers else 0


if __name__ == "__main__":
    sys.exit(main())

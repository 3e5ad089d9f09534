"""Cadenza's benchmark: many Tasks on a whole local system, measured end to end.

    .venv/bin/python bench/run.py [--scenario sustained] [--tasks 50] [--seconds 80] [--pods 3]
                                  [--replicas 2] [--out bench/out]
    .venv/bin/python bench/run.py --scenario burst|footprint|peer [--tasks N] [--minutes 3]

Four scenarios (docs/benchmark.md): ``sustained`` (below, the default, ``sustained.py``),
``burst`` (N Tasks due in the same second, ``burst.py``), ``footprint`` (N Tasks applied at once,
``footprint.py``) and ``peer`` (the Kubernetes CronJob controller beside N minute Tasks,
``peer.py``). Each writes ``<out>/result.json`` (and ``<out>/result-<scenario>.json``) with a
top-level ``scenario`` field and its own figures under a key named after it, plus one plot when
matplotlib is installed.

Every scenario starts a real kube-apiserver + etcd, a scratch database on the local MariaDB,
``--pods`` executor pods (real sidecar + demo app processes on 127.0.3.x), ``--replicas`` operator
replicas (``python -m cadenza operator``) and one Executor. The sustained scenario then applies
``--tasks`` Tasks that fire every second (``* * * * * *``, handler ``echo``) and lets them run
``--seconds`` seconds while it samples CPU and RSS from ``/proc``. The numbers come from MySQL's
history and the leader's ``/metrics`` (see docs/benchmark.md for what each one means). It prints one
JSON document to stdout, writes it to ``<out>/result.json``, draws ``<out>/fire_delay.png`` when
matplotlib is installed and keeps the processes' logs in ``<out>/logs/``. Progress goes to stderr.
Its headline, beside the fire delay percentiles, is the leader's CPU milliseconds per run
(``sustained`` in the JSON).

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
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import burst
import footprint
import peer
import plotting
import sustained
from measuring import Measurement, leftovers, say
from system import REPO, System

SCENARIOS = ("sustained", "burst", "footprint", "peer")
DEFAULT_TASKS = {"sustained": 50, "burst": 10_000, "footprint": 10_000, "peer": 600}


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


# -- the command --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenario", choices=SCENARIOS, default="sustained", help="what to measure (sustained)"
    )
    parser.add_argument(
        "--tasks",
        type=int,
        default=None,
        help="Tasks (and CronJobs for peer); 50 sustained, 10000 burst and footprint, 600 peer",
    )
    parser.add_argument(
        "--seconds", type=int, default=80, help="sustained: seconds to let them run (80)"
    )
    parser.add_argument(
        "--minutes", type=int, default=3, help="peer: minute ticks measured on both sides (3)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=900,
        help="burst, footprint, peer: seconds to wait for each stage before reporting it (900)",
    )
    parser.add_argument("--pods", type=int, default=3, help="executor pods (3)")
    parser.add_argument("--replicas", type=int, default=2, help="operator replicas (2)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="bench/out")
    parser.add_argument(
        "--warmup",
        type=int,
        default=15,
        help="seconds after every Task fired before measuring (15)",
    )
    parser.add_argument(
        "--callbacks-to",
        choices=("self", "next"),
        default="self",
        help=(
            "where each replica tells sidecars to send results: to itself (self, the default,"
            " so the leader applies every callback) or to the next replica (next: as a Service"
            " in front of the replicas would spread them, followers apply most)"
        ),
    )
    parser.add_argument(
        "--pod-concurrency",
        type=int,
        default=None,
        help=(
            "sidecar --max-concurrency and the Executor's maxConcurrencyPerPod (sustained:"
            " max(32, 3 * tasks / pods); otherwise enough for a whole tick: max(32, tasks / pods))"
        ),
    )
    args = parser.parse_args(argv)
    if args.tasks is None:
        args.tasks = DEFAULT_TASKS[args.scenario]
    if args.pod_concurrency is None:
        # A burst scenario offers every run of a tick at once: refusals (429) would measure the
        # pods' admission limit, not the scheduler.
        # Sustained ticks come every second and each Task keeps a round robin of its own, so
        # a tick's runs spread unevenly and a slot stays taken until its result is
        # acknowledged: twice the even share keeps refusals out of the leader's CPU per run.
        # The next tick's runs, sent ahead and held by the sidecar until their tick (protocol
        # 3; a second ahead with CADENZA_CLAIM_AHEAD_SECONDS=1), take a slot too: a third share.
        whole_tick = math.ceil(args.tasks / args.pods) if args.pods > 0 else 32
        share = 3 * whole_tick if args.scenario == "sustained" else whole_tick
        args.pod_concurrency = max(32, share)
    if args.scenario == "sustained" and args.seconds < args.warmup + 15:
        parser.error(f"--seconds must leave at least 15 s after the {args.warmup} s warm-up")
    for name in ("tasks", "pods", "replicas", "minutes"):
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


MEASURES = {
    "sustained": sustained.measure,
    "burst": burst.measure,
    "footprint": footprint.measure,
    "peer": peer.measure,
}


@dataclass
class Outcome:
    measured: Measurement
    exits: dict[str, dict[str, Any]]
    leftovers: list[str]
    overrides: dict[str, str]


def run(args: argparse.Namespace, out: Path) -> Outcome:
    """Start, measure, stop, and check that nothing is left running."""
    workdir = Path(tempfile.mkdtemp(prefix="cadenza-bench-"))
    system: System | None = None
    try:
        with contextlib.ExitStack() as stack:
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
            system = System(args, workdir, out, stack)
            system.start()
            measured = MEASURES[args.scenario](system, args)
            say("stopping everything")
    finally:
        left = leftovers(system.pids) if system else []
        say(f"stopped; processes left: {left or 'none'}")
    return Outcome(measured, system.exits, left, system.operator_overrides)


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
    config: dict[str, Any] = {
        "tasks": args.tasks,
        "seconds": args.seconds,
        "pods": args.pods,
        "replicas": args.replicas,
        "pod_concurrency": args.pod_concurrency,
        "callbacks_to": args.callbacks_to,
        "schedule": outcome.measured.schedule,
        "handler": "echo",
        "operator_settings": "defaults (docs/configuration.md)"
        + (", but operator_overrides" if outcome.overrides else ""),
        "operator_overrides": outcome.overrides,
        "scenario": args.scenario,
    }
    if args.scenario != "sustained":
        del config["seconds"]
        config["timeout"] = args.timeout
    if args.scenario == "peer":
        config["minutes"] = args.minutes
    result = {
        "config": config,
        "scenario": args.scenario,
        **outcome.measured.result,
        "replica_exits": outcome.exits,
        # Cadenza's own logs (JSON lines); the control plane's are kept but only start-up noise.
        "log_findings": log_findings(
            [*(out / "logs").glob("replica-*.log"), *(out / "logs").glob("bench-pool-*.log")]
        ),
        "leftover_processes": outcome.leftovers,
        "plot": None,
    }
    if plotting.available():
        name = "fire_delay.png" if args.scenario == "sustained" else f"{args.scenario}.png"
        machine = f"{args.pods} pods, {args.replicas} replicas, {os.cpu_count()} cores"
        outcome.measured.draw(out / name, machine)
        result["plot"] = str(out / name)
    else:
        say("matplotlib is not installed: no plot (pip install matplotlib)")
    text = json.dumps(result, indent=2, default=str)
    (out / "result.json").write_text(text + "\n")
    # Kept per scenario too, so running another scenario does not overwrite this one.
    (out / f"result-{args.scenario}.json").write_text(text + "\n")
    print(text)
    return 1 if outcome.leftovers else 0


if __name__ == "__main__":
    sys.exit(main())

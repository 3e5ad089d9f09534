"""What the benchmark run did, computed from MySQL's execution history and the leader's metrics.

Every number is taken over the *steady window*: the whole-second ticks from ``window_start`` to
``window_end`` inclusive, chosen by the caller after every Task has fired once (no start-up) and
before the run stops (no tail). Within it each Task is expected to fire once per second. The
burst and peer scenarios look at single ticks instead (:func:`one_tick`), where every Task is
due at once.

Invariants:
- Only rows of origin ``schedule`` count as ticks; ``misfire``/``manual`` rows are reported
  apart (a benchmark without a leader change should have none).
- Time differences use the database's own timestamps (``UTC_TIMESTAMP(3)`` and the sidecar's
  reported times) or the demo apps' ledgers, all on this machine, never this process's clock.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pymysql

TERMINAL = {"succeeded", "failed", "timed_out", "cancelled", "skipped", "lost"}


@dataclass(frozen=True)
class Row:
    task_uid: str
    scheduled_at: datetime
    origin: str
    status: str
    dispatched_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    pod_name: str | None
    attempt: int
    created_at: datetime
    """When the leader claimed the tick (inserted the row): up to a lookahead before it."""
    error: str | None


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution(values: Sequence[float]) -> dict[str, float | int | None]:
    """p50/p90/p99/max/mean in milliseconds of a list of seconds."""
    if not values:
        return {"count": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    ms = [v * 1000 for v in values]
    return {
        "count": len(ms),
        "p50_ms": round(percentile(ms, 50), 1),
        "p90_ms": round(percentile(ms, 90), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "max_ms": round(max(ms), 1),
        "mean_ms": round(sum(ms) / len(ms), 1),
    }


def fetch_rows(conn: pymysql.connections.Connection, namespace: str) -> list[Row]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT task_uid, scheduled_at, origin, status, dispatched_at, started_at,"
            " finished_at, pod_name, attempt, created_at, error FROM task_executions"
            " WHERE namespace = %s AND scheduled_at IS NOT NULL",
            (namespace,),
        )
        return [Row(*r) for r in cur.fetchall()]


def open_in_window(conn: pymysql.connections.Connection, namespace: str, end: datetime) -> int:
    """Runs of the window (ticks up to ``end``) not finished yet."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM task_executions WHERE namespace = %s AND scheduled_at <= %s"
            " AND status NOT IN %s",
            (namespace, end, tuple(TERMINAL)),
        )
        row = cur.fetchone()
    return int(row[0]) if row else 0


def _seconds(later: datetime | None, earlier: datetime) -> float | None:
    return None if later is None else (later - earlier).total_seconds()


def ticks(
    rows: Iterable[Row], tasks: int, start: datetime, end: datetime
) -> dict[str, int | float]:
    """Expected vs claimed ticks per Task over the window; duplicates must be 0."""
    expected_per_task = int((end - start).total_seconds()) + 1
    scheduled = [r for r in rows if r.origin == "schedule" and start <= r.scheduled_at <= end]
    per_key = Counter((r.task_uid, r.scheduled_at) for r in scheduled)
    duplicates = sum(n - 1 for n in per_key.values())
    return {
        "expected_per_task": expected_per_task,
        "expected": expected_per_task * tasks,
        "claimed": len(per_key),
        "missed": expected_per_task * tasks - len(per_key),
        "duplicated": duplicates,
        "off_grid": sum(1 for r in scheduled if r.scheduled_at.microsecond),
    }


def analyse(rows: Sequence[Row], tasks: int, start: datetime, end: datetime) -> dict[str, Any]:
    """Fire delay, end-to-end latency, throughput, tick accounting and outcomes."""
    window = [r for r in rows if start <= r.scheduled_at <= end]
    scheduled = [r for r in window if r.origin == "schedule"]
    fire = [d for r in scheduled if (d := _seconds(r.dispatched_at, r.scheduled_at)) is not None]
    claim = [(r.created_at - r.scheduled_at).total_seconds() for r in scheduled]
    run_time = [
        d
        for r in scheduled
        if r.started_at is not None and (d := _seconds(r.finished_at, r.started_at)) is not None
    ]
    per_tick: dict[datetime, list[datetime]] = {}
    for r in scheduled:
        if r.dispatched_at is not None:
            per_tick.setdefault(r.scheduled_at, []).append(r.dispatched_at)
    spread = [(max(d) - min(d)).total_seconds() for d in per_tick.values()]
    span = (end - start).total_seconds() + 1
    window_end = end + timedelta(seconds=1)
    finished = [
        r for r in rows if r.finished_at is not None and start <= r.finished_at < window_end
    ]
    return {
        "fire_delay": distribution(fire),
        "claim_lateness": distribution(claim),
        "dispatch_spread_per_tick": distribution(spread),
        "end_to_end": distribution(end_to_end(rows, start, end)),
        "handler_run_time": distribution(run_time),
        "throughput": {
            "offered_runs_per_second": tasks,
            "finished_runs_per_second": round(len(finished) / span, 2),
        },
        "ticks": ticks(rows, tasks, start, end),
        "status": dict(Counter(r.status for r in window)),
        "origin": dict(Counter(r.origin for r in window)),
        "retried_runs": sum(1 for r in window if r.attempt > 1),
        "errors": dict(Counter(r.error[:300] for r in window if r.error).most_common(5)),
        "runs_per_pod": dict(Counter(r.pod_name or "-" for r in scheduled)),
    }


def series(
    rows: Sequence[Row], start: datetime, end: datetime, stamp: str = "dispatched_at"
) -> list[tuple[datetime, float]]:
    """(tick, seconds from the tick to ``stamp``) of each scheduled run in the window that has
    that stamp, for the plot."""
    found = []
    for r in rows:
        at = getattr(r, stamp)
        if r.origin == "schedule" and at is not None and start <= r.scheduled_at <= end:
            found.append((r.scheduled_at, (at - r.scheduled_at).total_seconds()))
    return found


def end_to_end(rows: Sequence[Row], start: datetime, end: datetime) -> list[float]:
    """Tick to finish, in seconds, of each finished scheduled run in the window."""
    return [
        (r.finished_at - r.scheduled_at).total_seconds()
        for r in rows
        if r.origin == "schedule" and r.finished_at is not None and start <= r.scheduled_at <= end
    ]


def executed_twice(ledgers: Iterable[Path]) -> int:
    """Execution keys the demo apps ran more than once (the pods' own record, not ours)."""
    seen: Counter[str] = Counter()
    for ledger in ledgers:
        if ledger.exists():
            for line in ledger.read_text().splitlines():
                if line.strip():
                    seen[str(json.loads(line).get("executionId"))] += 1
    return sum(n - 1 for n in seen.values() if n > 1)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {series: value} (comments dropped)."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def metric_total(values: dict[str, float], name: str) -> float:
    """Sum of every series of ``name`` (all label sets)."""
    return sum(v for k, v in values.items() if k == name or k.startswith(name + "{"))


def metric_by_label(values: dict[str, float], name: str) -> dict[str, float]:
    """{labels: value} of every series of ``name``."""
    return {k[len(name) :] or "{}": v for k, v in values.items() if k.startswith(name + "{")}


# -- where the run arrived: the sidecar's acceptance and the demo app's ledger ------------------


def at_sidecar(rows: Iterable[Row], start: datetime, end: datetime) -> list[float]:
    """Tick to the sidecar's acceptance, in seconds, of each scheduled run in the window.

    ``started_at`` is the time the sidecar stamped on the run when it started it (``Run``'s
    ``startedAt``: when it admitted it, or for a run sent ahead with ``startAt``, when it let
    it start), carried back by the callback: measured by the pod itself, with no leader
    bookkeeping in it.
    """
    return [delay for _, delay in series(list(rows), start, end, "started_at")]


def slowest_ticks(
    rows: Sequence[Row], start: datetime, end: datetime, count: int = 5
) -> list[dict[str, Any]]:
    """The ``count`` ticks of the window whose latest run started latest at its sidecar, each with
    the latest start and the latest dispatch by pod (milliseconds after the tick): whether a slow
    tick was slow everywhere (the leader sent late) or at one pod."""
    by_tick: dict[datetime, list[Row]] = {}
    for r in rows:
        if r.origin == "schedule" and start <= r.scheduled_at <= end:
            by_tick.setdefault(r.scheduled_at, []).append(r)

    def latest(runs: Iterable[Row], stamp: str) -> float | None:
        found = [
            (getattr(r, stamp) - r.scheduled_at).total_seconds()
            for r in runs
            if getattr(r, stamp) is not None
        ]
        return round(max(found) * 1000, 1) if found else None

    slowest = []
    for tick, runs in by_tick.items():
        pods: dict[str, list[Row]] = {}
        for r in runs:
            pods.setdefault(r.pod_name or "?", []).append(r)
        slowest.append(
            {
                "tick": tick.isoformat() + "Z",
                "started_ms": latest(runs, "started_at"),
                "by_pod": {
                    pod: {
                        "runs": len(mine),
                        "started_ms": latest(mine, "started_at"),
                        "dispatched_ms": latest(mine, "dispatched_at"),
                    }
                    for pod, mine in sorted(pods.items())
                },
            }
        )
    slowest.sort(
        key=lambda t: -math.inf if t["started_ms"] is None else t["started_ms"], reverse=True
    )
    return slowest[:count]


def settling(rows: Sequence[Row], start: datetime, end: datetime) -> dict[str, Any]:
    """The ticks from ``start`` (every Task had fired) to ``end`` (the last before the window):
    how late their runs started at the sidecar, and the last of them whose runs started more
    than 100 ms late at the median, in seconds after ``start``. An apply of many Tasks leaves
    work behind that the first ticks after it wait for; these say how long that lasted."""
    delays = series(rows, start, end, "started_at")
    by_tick: dict[datetime, list[float]] = {}
    for tick, delay in delays:
        by_tick.setdefault(tick, []).append(delay)
    late = [tick for tick, ds in by_tick.items() if percentile(ds, 50) > 0.1]
    return {
        "from": start.isoformat() + "Z",
        "ticks": round((end - start).total_seconds()) + 1,
        "fire_delay_at_sidecar": distribution([delay for _, delay in delays]),
        "last_late_tick_seconds": (max(late) - start).total_seconds() if late else None,
    }


@dataclass(frozen=True)
class Call:
    """One line of a demo app's ledger: a run's first attempt as the application received it."""

    execution_id: str
    scheduled_at: datetime
    received_at: datetime


def _naive_utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=None) - (moment.utcoffset() or timedelta(0))


def read_calls(ledgers: Iterable[Path]) -> list[Call]:
    """First attempts of scheduled runs from the demo apps' ledgers (retries left out)."""
    calls = []
    for ledger in ledgers:
        if not ledger.exists():
            continue
        for line in ledger.read_text().splitlines():
            entry = json.loads(line) if line.strip() else {}
            if entry.get("scheduledAt") and entry.get("attempt") in (1, None):
                calls.append(
                    Call(
                        str(entry.get("executionId")),
                        _naive_utc(entry["scheduledAt"]),
                        _naive_utc(entry["time"]),
                    )
                )
    return calls


def at_app(calls: Iterable[Call], start: datetime, end: datetime) -> list[float]:
    """Tick to the demo app's receipt, in seconds, of each first attempt ticked in the window."""
    return [
        (c.received_at - c.scheduled_at).total_seconds()
        for c in calls
        if start <= c.scheduled_at <= end
    ]


def one_tick(
    rows: Sequence[Row], calls: Sequence[Call], tasks: int, tick: datetime
) -> dict[str, Any]:
    """Everything about the ``tasks`` runs due at one ``tick``: none lost, how fast they left.

    ``lost`` counts Tasks with no run for the tick at all, ``never_dispatched`` Tasks whose run
    was claimed but never sent; both must be 0. The dispatch rate is the tick's dispatched runs
    over the time from the tick (or the first dispatch, when runs were sent ahead of it) to its
    last dispatch.
    """
    due = [r for r in rows if r.origin == "schedule" and r.scheduled_at == tick]
    per_task = Counter(r.task_uid for r in due)
    sent = [r for r in due if r.dispatched_at is not None]
    fire = [(r.dispatched_at - tick).total_seconds() for r in sent if r.dispatched_at]
    finish = [(r.finished_at - tick).total_seconds() for r in due if r.finished_at]
    sidecar = at_sidecar(due, tick, tick)
    last = max(fire, default=None)
    first = min(fire, default=None)
    span = None if last is None or first is None else last - min(first, 0.0)
    return {
        "tick": tick.isoformat() + "Z",
        "tasks": tasks,
        "runs": len(per_task),
        "lost": tasks - len(per_task),
        "duplicated": sum(n - 1 for n in per_task.values()),
        "never_dispatched": tasks - len({r.task_uid for r in sent}),
        "last_dispatch_ms": None if last is None else round(last * 1000, 1),
        "first_dispatch_ms": None if first is None else round(first * 1000, 1),
        "last_sidecar_accept_ms": round(max(sidecar) * 1000, 1) if sidecar else None,
        "last_finish_ms": round(max(finish) * 1000, 1) if finish else None,
        # A floor of 1 ms keeps a one-run tick from dividing by zero.
        "dispatches_per_second": round(len(sent) / max(span, 0.001), 1) if span else None,
        "fire_delay": distribution(fire),
        "fire_delay_at_sidecar": distribution(sidecar),
        "fire_delay_at_app": distribution(at_app(calls, tick, tick)),
        "claim_lateness": distribution([(r.created_at - tick).total_seconds() for r in due]),
        "status": dict(Counter(r.status for r in due)),
        "errors": dict(Counter(r.error[:300] for r in due if r.error).most_common(5)),
    }

"""The footprint scenario: N Tasks applied at once, and what it takes to mirror and schedule them.

The Tasks are created as fast as the API server takes them (``kubeapi.create_all``) with a daily
schedule twelve hours away, so nothing fires and the figures are the mirror's and the status
writer's alone. Measured from the last creation answered: when every Task had its row in MySQL's
``tasks`` (polled), and when every Task first showed ``status.nextScheduleTime`` (a watch, then
one paginated list to confirm); the leader's CPU per Task from the first creation to each of
those moments (read from /proc at the instant); RSS of the leader and the followers; the write
requests the API server served meanwhile, by verb and resource, and the operator's own
``cadenza_task_status_writes_total``.

Limits: the API server's counters have no user-agent label, so its writes are everything written
after the last creation; only the operator writes then, apart from the API server's own lease
heartbeats, which are left out of ``operator_writes_per_second``. The watch and the polls run in
this process, on the same cores.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import history
import kubeapi
import plotting
from measuring import Measurement, resources, say, wait_for
from system import NAMESPACE, System, cpu_seconds, task_manifest

STATUS_WRITES = "cadenza_task_status_writes_total"


def schedule_far_away(now: datetime) -> str:
    """Once a day, twelve hours from now: no Task fires while the scenario runs."""
    return f"0 0 {(now.hour + 12) % 24} * * *"


@dataclass
class Progress:
    """Polls Tasks mirrored (MySQL) and with a status (the watch) twice a second, in a thread."""

    system: System
    watch: kubeapi.StatusWatch
    points: list[tuple[float, int, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._run, name="bench-progress", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def mirrored(self) -> int:
        return self.points[-1][1] if self.points else 0

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.points.append((time.time(), self.system.mirrored(), self.watch.count()))
            except Exception as exc:
                say(f"progress poll failed: {exc!r}")


def mirror_times(system: System) -> dict[str, float]:
    """When the leader inserted each Task's row (``tasks.created_at``), by name."""
    with system.db() as conn, conn.cursor() as cur:
        cur.execute("SELECT name, created_at FROM tasks WHERE namespace = %s", (NAMESPACE,))
        return {name: at.replace(tzinfo=UTC).timestamp() for name, at in cur.fetchall()}


def per_task(cpu: tuple[float | None, float | None], tasks: int) -> float | None:
    before, after = cpu
    return None if before is None or after is None else round((after - before) * 1000 / tasks, 2)


def measure(system: System, args: argparse.Namespace) -> Measurement:
    schedule = schedule_far_away(datetime.now(UTC))
    sampler = system.sampler()
    api = system.api()
    watch = kubeapi.StatusWatch(api, NAMESPACE)
    watch.start()
    system.stack.callback(watch.stop)
    progress = Progress(system, watch)
    progress.start()
    system.stack.callback(progress.stop)
    leader = system.leader()

    say(f"creating {args.tasks} Tasks on {schedule!r}")
    cpu_start = cpu_seconds(leader)
    applied = kubeapi.create_all(api, [task_manifest(i, schedule) for i in range(args.tasks)])
    apiserver_before = kubeapi.apiserver_metrics(system.plane)  # type: ignore[arg-type]
    writes_before = system.operator_metric(STATUS_WRITES)
    say(f"created in {applied.seconds:.1f}s; waiting until all are mirrored and have a status")
    mirrored = wait_for(lambda: progress.mirrored() >= args.tasks, args.timeout, "mirrored")
    # A stage that timed out gets no CPU figure rather than one for an unfinished job.
    cpu_mirrored = cpu_seconds(leader) if mirrored else None
    with_status = wait_for(lambda: watch.count() >= args.tasks, args.timeout, "status")
    cpu_status = cpu_seconds(leader) if with_status else None
    end = time.time()
    apiserver_after = kubeapi.apiserver_metrics(system.plane)  # type: ignore[arg-type]
    writes_after = system.operator_metric(STATUS_WRITES)
    progress.stop()
    watch.stop()
    listed = kubeapi.list_tasks(api, NAMESPACE)
    if system.leader() is not leader:
        say("WARNING: the leader changed during the run")

    span = end - applied.last
    writes = kubeapi.writes_between(apiserver_before, apiserver_after)
    operator_writes = sum(v for k, v in writes.items() if not k.endswith(" leases"))
    mirrored_at = mirror_times(system)
    res = resources(sampler, applied.first, end)

    def after_last(moment: float | None) -> float | None:
        return None if moment is None else round(moment - applied.last, 1)

    figures: dict[str, Any] = {
        "apply": applied.summary(),
        "mirrored_seconds_after_last_apply": after_last(mirrored),
        "status_seconds_after_last_apply": after_last(with_status),
        "mirrored": len(mirrored_at),
        "with_status_seen_by_watch": watch.count(),
        "with_status_listed": sum(1 for t in listed if kubeapi.has_status(t)),
        "listed": len(listed),
        "leader": leader.name,
        "leader_cpu_ms_per_task_to_mirrored": per_task((cpu_start, cpu_mirrored), args.tasks),
        "leader_cpu_ms_per_task_to_status": per_task((cpu_start, cpu_status), args.tasks),
        "leader_rss_mib": (res["leader"] or {}).get("rss_mib_last"),
        "leader_rss_mib_peak": (res["leader"] or {}).get("rss_mib_peak"),
        "follower_rss_mib": [f.get("rss_mib_last") for f in res["followers"]],
        "apiserver_writes": writes,
        "apiserver_writes_seconds": round(span, 1),
        "operator_writes_per_second": round(operator_writes / span, 2) if span > 0 else None,
        "operator_status_writes": writes_after - writes_before,
        "watch": {"events": watch.events, "relists": watch.relists, "error": watch.error},
    }
    result = {"footprint": figures, "resources": res}
    say(
        f"mirrored {figures['mirrored_seconds_after_last_apply']} s and status"
        f" {figures['status_seconds_after_last_apply']} s after the last apply; leader"
        f" {figures['leader_cpu_ms_per_task_to_status']} ms per Task"
    )
    created = applied.answered
    lags = {
        "mirrored": [at - created[name] for name, at in mirrored_at.items() if name in created],
        "status": [at - created[n] for n, at in watch.first_status.items() if n in created],
    }
    # Per Task, from its own creation answered: mirror (MySQL's clock) and first status seen.
    figures["mirror_lag_per_task"] = history.distribution(lags["mirrored"])
    figures["status_lag_per_task"] = history.distribution(lags["status"])
    points = list(progress.points)

    def draw(path: Any, machine: str) -> None:
        title = f"Cadenza footprint: {args.tasks} Tasks applied at once, {machine}"
        plotting.draw_footprint(
            path, title, points, lags, sampler.samples, (applied.first, applied.last)
        )

    return Measurement(result, draw, schedule)

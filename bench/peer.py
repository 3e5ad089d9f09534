"""The peer scenario: the Kubernetes CronJob controller beside Cadenza, N of each due every minute.

On the same API server it creates N CronJobs (``* * * * *``, a one-container Job template; no
kubelet or Job controller runs, so a Job is only created, which is what is measured) and N
Tasks (``0 * * * * *``, handler ``echo``), then starts kube-controller-manager from
``hack/controlplane`` with only its CronJob controller (``--controllers=cronjob
--leader-elect=false``, everything else at its defaults: 20 requests/s, 5 concurrent syncs).
Both sides run side by side, not in turn: the issue's target is a ratio "in the same run", the
CronJob controller's pace is set by its client-side rate limit rather than by CPU, and side by
side both see the same machine load and the same ticks. The first whole minute at least
``MARGIN`` s after everything is ready and the ``--minutes`` - 1 after it are measured.

Per tick and side: ticks served (a Job whose ``batch.kubernetes.io/cronjob-scheduled-timestamp``
is the tick; a run of that tick dispatched) and never served, tick to Job ``creationTimestamp``
(one-second resolution) against tick to ``dispatched_at`` (ms), and the rate: objects over the
time from the tick to the last one (at least 1 s for Jobs, whose times are whole seconds).

Limits: a Job for a tick can still appear until the next tick (the controller then creates only
the newest missed one), so the scenario waits a whole minute after the last measured tick.
"""

from __future__ import annotations

import argparse
import math
import ssl
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import history
import kubeapi
import plotting
from cadenza.devenv import controlplane as cp
from measuring import Measurement, resources, say, sleep_until, utc, wait_for
from system import NAMESPACE, System, task_manifest

SCHEDULE = "0 * * * * *"
CRON_SCHEDULE = "* * * * *"
MARGIN = 10.0
"""Seconds from "everything ready" to the first measured tick."""
SCHEDULED_AT = "batch.kubernetes.io/cronjob-scheduled-timestamp"
KCM = "kube-controller-manager"


def cronjob_manifest(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": f"cron-{index:05d}", "namespace": NAMESPACE},
        "spec": {
            "schedule": CRON_SCHEDULE,
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "noop", "image": "example.invalid/noop"}],
                        }
                    }
                }
            },
        },
    }


def start_cronjob_controller(system: System) -> str:
    """Start kube-controller-manager's CronJob controller; stopped with the control plane.

    Registered as the plane's ``kube-controller-manager`` process, which ``ControlPlane.stop``
    stops first; only its serving address and certificates are set (a free port, so it cannot
    collide with anything else on the machine), never a controller setting.
    """
    plane = system.plane
    assert plane is not None
    port = cp.free_port()
    proc = cp.spawn(
        [
            str(plane.bin_dir / KCM),
            f"--kubeconfig={plane.kubeconfig}",
            "--controllers=cronjob",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={plane.workdir / 'kcm-certs'}",
        ],
        plane.workdir / f"{KCM}.log",
    )
    plane.processes[KCM] = proc
    system.pids.append(proc.pid)
    url = f"https://127.0.0.1:{port}/healthz"
    cp.wait_until(lambda: _healthy(proc, url), 60, f"{KCM} {url}", interval=0.5)
    return url


def _healthy(proc: Any, url: str) -> bool:
    if proc.poll() is not None:
        raise cp.ControlPlaneError(f"{KCM} exited with {proc.returncode}; see its log")
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # its own self-signed cert
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _moment(text: str) -> datetime:
    """An RFC 3339 time as the naive UTC datetime the history uses."""
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=None) - (moment.utcoffset() or timedelta(0))


def scheduled_for(job: dict[str, Any]) -> datetime | None:
    """The tick a Job was created for, from the CronJob controller's annotation."""
    stamp = (job["metadata"].get("annotations") or {}).get(SCHEDULED_AT)
    return _moment(stamp) if stamp else None


def created_after_tick(job: dict[str, Any], tick: datetime) -> float:
    return (_moment(job["metadata"]["creationTimestamp"]) - tick).total_seconds()


def cron_tick(jobs: list[dict[str, Any]], cronjobs: int, tick: datetime) -> dict[str, Any]:
    """The CronJob side of one tick: Jobs created for it, by whom, and how late."""
    mine = [j for j in jobs if scheduled_for(j) == tick]
    owners = Counter(
        next((o["name"] for o in j["metadata"].get("ownerReferences") or []), "?") for j in mine
    )
    delays = [created_after_tick(j, tick) for j in mine]
    last = max(delays, default=None)
    return {
        "tick": tick.isoformat() + "Z",
        "cronjobs": cronjobs,
        "jobs": len(mine),
        "never_served": cronjobs - len(owners),
        "duplicated": sum(n - 1 for n in owners.values()),
        "last_created_s": last,
        # creationTimestamp has whole seconds: a burst "within 0 s" took up to 1 s.
        "jobs_per_second": round(len(mine) / max(last, 1.0), 2) if last is not None else None,
        "tick_to_created": history.distribution(delays),
    }


def _rate(count: int, spans: list[float]) -> float | None:
    return round(count / sum(spans), 2) if spans and sum(spans) > 0 else None


def summarize(
    cron: list[dict[str, Any]], tasks: list[dict[str, Any]], expected: int
) -> dict[str, Any]:
    """Both sides over every measured tick, and the ratio of their rates."""
    cron_spans = [max(t["last_created_s"], 1.0) for t in cron if t["last_created_s"] is not None]
    # Runs sent ahead of their tick (sidecar protocol 3) count from the first dispatch.
    task_spans = [
        max((t["last_dispatch_ms"] - min(t["first_dispatch_ms"], 0)) / 1000, 0.001)
        for t in tasks
        if t["last_dispatch_ms"] is not None
    ]
    jobs = sum(t["jobs"] for t in cron)
    dispatched = sum(t["tasks"] - t["never_dispatched"] for t in tasks)
    cron_rate, task_rate = _rate(jobs, cron_spans), _rate(dispatched, task_spans)
    return {
        "ticks_due_per_side": expected,
        "cronjob_never_served": sum(t["never_served"] for t in cron),
        "cronjob_never_served_fraction": round(sum(t["never_served"] for t in cron) / expected, 4),
        "task_never_served": sum(t["never_dispatched"] for t in tasks),
        "task_lost": sum(t["lost"] for t in tasks),
        "task_duplicated": sum(t["duplicated"] for t in tasks),
        "cronjob_jobs_per_second": cron_rate,
        "task_dispatches_per_second": task_rate,
        "rate_ratio_task_over_cronjob": (
            round(task_rate / cron_rate, 1) if cron_rate and task_rate else None
        ),
    }


def measure(system: System, args: argparse.Namespace) -> Measurement:
    api = system.api()
    say(f"creating {args.tasks} CronJobs ({CRON_SCHEDULE!r}) and {args.tasks} Tasks ({SCHEDULE!r})")
    cronjobs = kubeapi.create_all(api, [cronjob_manifest(i) for i in range(args.tasks)])
    tasks = kubeapi.create_all(api, [task_manifest(i, SCHEDULE) for i in range(args.tasks)])
    say(f"created in {cronjobs.seconds:.1f}s and {tasks.seconds:.1f}s; starting the controller")
    start_cronjob_controller(system)
    sampler = system.sampler()
    wait_for(lambda: system.mirrored() >= args.tasks, args.timeout, "every Task mirrored")
    first = math.ceil((time.time() + MARGIN) / 60) * 60.0
    ticks = [first + 60 * i for i in range(args.minutes)]
    say(f"measuring {args.minutes} ticks from {utc(first):%H:%M:%S} UTC")

    def progress() -> str:
        return f"runs open {system.open_runs()}"

    # A Job for the last tick can appear until the next one; then a few seconds for the writes.
    sleep_until(ticks[-1] + 65, progress)
    # Cadenza never skips a tick, it only runs late: give the measured ticks' runs their time.
    last = utc(ticks[-1])

    def measured_runs_done() -> bool:
        with system.db() as conn:
            return history.open_in_window(conn, NAMESPACE, last) == 0

    wait_for(measured_runs_done, args.timeout, "the measured ticks' runs to finish")
    end = time.time()
    jobs = kubeapi.list_jobs(api, NAMESPACE)
    with system.db() as conn:
        rows = history.fetch_rows(conn, NAMESPACE)
    calls = history.read_calls(p.ledger for p in system.pods)
    cron = [cron_tick(jobs, args.tasks, utc(t)) for t in ticks]
    cadenza = [history.one_tick(rows, calls, args.tasks, utc(t)) for t in ticks]
    summary = summarize(cron, cadenza, args.tasks * args.minutes)
    say(f"summary {summary}")
    result = {
        "peer": summary
        | {
            "mode": "side by side: both due at the same minutes on one API server",
            "apply": {"cronjobs": cronjobs.summary(), "tasks": tasks.summary()},
            "cronjob_ticks": cron,
            "task_ticks": cadenza,
        },
        "resources": resources(sampler, ticks[0], end),
    }
    at = [utc(t) for t in ticks]
    delays = {
        "CronJob: Job created": [
            created_after_tick(j, tick) for j in jobs if (tick := scheduled_for(j)) in at
        ],
        "Cadenza: run dispatched": [
            (r.dispatched_at - r.scheduled_at).total_seconds()
            for r in rows
            if r.origin == "schedule" and r.scheduled_at in at and r.dispatched_at
        ],
    }
    served = {
        "CronJob": [t["cronjobs"] - t["never_served"] for t in cron],
        "Cadenza": [t["tasks"] - t["never_dispatched"] for t in cadenza],
    }

    def draw(path: Any, machine: str) -> None:
        title = (
            f"CronJob controller vs Cadenza: {args.tasks} of each due every minute,"
            f" {args.minutes} ticks, {machine}"
        )
        labels = [f"{utc(t):%H:%M}" for t in ticks]
        plotting.draw_peer(path, title, delays, served, args.tasks, labels)

    return Measurement(result, draw, f"{SCHEDULE} (Tasks); {CRON_SCHEDULE} (CronJobs)")

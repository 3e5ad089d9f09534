"""CPU time and resident memory of the benchmark's processes, read from ``/proc`` once a second.

A :class:`Sampler` thread records, for every watched process, its cumulative CPU time (user +
system, children excluded), its RSS and how long its main thread waited for a CPU while runnable
(``/proc/<pid>/schedstat``: for an asyncio process, the event loop starved of CPU) and how long
all its threads together did (``/proc/<pid>/task/*/schedstat``: a database lane or a MariaDB
connection thread starved the same way), plus the whole machine's busy fraction from
``/proc/stat``. Use over an interval is the difference of two
samples, so one sample per second costs a few file reads and nothing in the measured processes.

Invariant: a process that has exited simply stops producing samples; the sampler never raises
for it (processes are stopped while it may still be running).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Sample:
    """One reading of one process."""

    at: float
    """Wall-clock time (``time.time()``) of the reading."""
    cpu_seconds: float
    """Cumulative user + system CPU time of the process."""
    rss_bytes: int
    main_run_seconds: float
    """Cumulative CPU time of the main thread alone (the event loop of an asyncio process)."""
    wait_seconds: float
    """Cumulative time the main thread was runnable but waiting for a CPU."""
    threads_wait_seconds: float
    """The same, summed over the threads alive now (an exited thread's share is gone)."""
    role: str
    """What the process was doing then: ``leader``, ``follower``, or its component name."""


@dataclass(frozen=True)
class MachineSample:
    at: float
    busy_ticks: int
    total_ticks: int


def read_process(pid: int) -> tuple[float, int, float, float, float] | None:
    """(CPU s, RSS bytes, main thread's CPU s, its run-queue wait s, all threads' run-queue wait
    s) of ``pid``; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode()
        with open(f"/proc/{pid}/statm", "rb") as f:
            statm = f.read().split()
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            ran_ns, waited_ns = (int(v) for v in f.read().split()[:2])
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces: count the fields after its closing paren.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    cpu = (utime + stime) / CLOCK_TICKS
    return cpu, int(statm[1]) * PAGE_SIZE, ran_ns / 1e9, waited_ns / 1e9, _threads_waited(pid)


def _threads_waited(pid: int) -> float:
    """Seconds the threads of ``pid`` alive now spent runnable, waiting for a CPU."""
    waited = 0
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                waited += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the thread ended meanwhile
    return waited / 1e9


def read_machine() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def pids_named(name: str) -> list[int]:
    """Processes whose command name is ``name`` (e.g. the MariaDB server we did not start)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == name:
                        found.append(int(entry))
            except OSError:
                continue
    return found


@dataclass
class Sampler:
    """Samples ``processes`` (name -> pid) every ``interval`` seconds in a daemon thread.

    ``role_of`` maps a process name to its current role (``leader``/``follower`` for operator
    replicas); it is called from the sampler thread, so it must be cheap and thread-safe.
    """

    processes: Mapping[str, int]
    role_of: Callable[[str], str]
    interval: float = 1.0
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    machine: list[MachineSample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.sample_once()
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def sample_once(self) -> None:
        now = time.time()
        busy, total = read_machine()
        self.machine.append(MachineSample(now, busy, total))
        for name, pid in self.processes.items():
            reading = read_process(pid)
            if reading is not None:
                role = self.role_of(name)
                self.samples.setdefault(name, []).append(Sample(now, *reading, role))


def cpu_series(samples: list[Sample]) -> list[tuple[float, float, str]]:
    """(time, cores used since the previous sample, role) for consecutive samples."""
    series = []
    for before, after in itertools.pairwise(samples):
        elapsed = after.at - before.at
        if elapsed > 0:
            cores = (after.cpu_seconds - before.cpu_seconds) / elapsed
            series.append((after.at, cores, after.role))
    return series


def wait_series(samples: list[Sample]) -> list[tuple[float, float]]:
    """(time, fraction of the interval the main thread waited for a CPU) per sample."""
    return [
        (after.at, (after.wait_seconds - before.wait_seconds) / (after.at - before.at))
        for before, after in itertools.pairwise(samples)
        if after.at > before.at
    ]


def machine_busy(machine: list[MachineSample], start: float, end: float) -> float | None:
    """Fraction of all cores busy between ``start`` and ``end`` (nearest samples inside)."""
    inside = [m for m in machine if start <= m.at <= end]
    if len(inside) < 2:
        return None
    total = inside[-1].total_ticks - inside[0].total_ticks
    return (inside[-1].busy_ticks - inside[0].busy_ticks) / total if total else None


def spent(samples: list[Sample], start: float, end: float) -> dict[str, float] | None:
    """CPU seconds used and seconds its threads waited for a CPU, from the last sample at or
    before ``start`` to the first at or after ``end`` (None without both)."""
    before = [s for s in samples if s.at <= start]
    after = [s for s in samples if s.at >= end]
    if not before or not after:
        return None
    first, last = before[-1], after[0]
    return {
        "cpu_seconds": round(last.cpu_seconds - first.cpu_seconds, 2),
        "threads_cpu_wait_seconds": round(
            max(last.threads_wait_seconds - first.threads_wait_seconds, 0.0), 2
        ),
    }


def summarize(samples: list[Sample], start: float, end: float) -> dict[str, Any]:
    """Mean and peak CPU (in cores), main-thread CPU wait and peak/last RSS (MiB) in a window."""
    inside = [s for s in samples if start <= s.at <= end]
    if len(inside) < 2:
        return {"cpu_cores_mean": None, "cpu_cores_peak": None, "rss_mib_peak": None}
    cpu = [c for _, c, _ in cpu_series(inside)]
    first, last = inside[0], inside[-1]
    elapsed = last.at - first.at
    return {
        "cpu_cores_mean": round((last.cpu_seconds - first.cpu_seconds) / elapsed, 3),
        "cpu_cores_peak": round(max(cpu), 3),
        "main_thread_cpu_fraction": round(
            (last.main_run_seconds - first.main_run_seconds) / elapsed, 3
        ),
        "main_thread_cpu_wait_fraction": round(
            (last.wait_seconds - first.wait_seconds) / elapsed, 3
        ),
        # Threads runnable but without a CPU, summed: 1.0 is one thread waiting all the time.
        "threads_cpu_wait_mean": round(
            max(last.threads_wait_seconds - first.threads_wait_seconds, 0.0) / elapsed, 3
        ),
        "rss_mib_peak": round(max(s.rss_bytes for s in inside) / 2**20, 1),
        "rss_mib_last": round(last.rss_bytes / 2**20, 1),
    }

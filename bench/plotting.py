"""The benchmark's pictures: one per scenario, each a delay distribution plus what explains it.

``draw`` is the sustained scenario's (fire delay as a CDF and over time, CPU and RSS of every
process); ``draw_burst``, ``draw_footprint`` and ``draw_peer`` are the others'. matplotlib is
optional (it is not a dependency of Cadenza itself): without it the run still
writes ``result.json`` and says that the plot was skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from procstats import Sample, cpu_series, wait_series


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class PlotData:
    fire: Sequence[tuple[datetime, float]]
    """(tick, fire delay in seconds) of every scheduled run in the window."""
    end_to_end: Sequence[float]
    """Tick to finish, in seconds, of the same runs."""
    samples: Mapping[str, list[Sample]]
    """The /proc samples of every watched process, by name."""
    window: tuple[float, float]
    """The steady window's first and last tick, as ``time.time()`` values."""
    at_sidecar: Sequence[tuple[datetime, float]] = ()
    """(tick, seconds from the tick to the sidecar's start) of the same runs."""


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plain_log_axis(axis: Any, low: float, high: float) -> None:
    """Plain numbers on a log x axis; 2 and 5 between the decades when it spans two or fewer."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")
    axis.xaxis.set_major_formatter(plain)
    if high <= low * 100:
        axis.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        axis.xaxis.set_minor_formatter(plain)
    else:
        axis.xaxis.set_minor_formatter(NullFormatter())


def _cdf(axis: Any, curves: Mapping[str, Sequence[float]], title: str, log: bool = True) -> None:
    """One CDF per named list of seconds: in milliseconds on a log axis, or in seconds."""
    drawn: list[float] = []
    for label, values in curves.items():
        # A log axis cannot show 0 ms: a delay below 0.1 ms is drawn at 0.1 ms.
        xs = sorted(max(v * 1000, 0.1) for v in values) if log else sorted(values)
        if xs:
            fractions = [(i + 1) / len(xs) for i in range(len(xs))]
            axis.plot(xs, fractions, drawstyle="steps-post", label=label)
            drawn += [xs[0], xs[-1]]
    if log:
        axis.set_xscale("log")
        if drawn:
            _plain_log_axis(axis, min(drawn), max(drawn))
        axis.set_xlabel("milliseconds after the tick (log scale)")
    else:
        axis.set_xlabel("seconds after the tick")
    axis.set_ylabel("fraction")
    axis.set_title(title)
    for q in (0.5, 0.9, 0.99):
        axis.axhline(q, color="grey", linewidth=0.5, linestyle=":")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)


def _cumulative(axis: Any, curves: Mapping[str, Sequence[float]], title: str) -> None:
    """How many of each named list of seconds after the tick had happened, over time."""
    for label, values in curves.items():
        seconds = sorted(values)
        if seconds:
            axis.step(seconds, range(1, len(seconds) + 1), where="post", label=label)
    axis.set_xlabel("seconds after the tick")
    axis.set_ylabel("count")
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)


def draw(path: Path, data: PlotData, title: str) -> None:
    """Four panels: CDF of fire delay and end-to-end, fire delay per tick, CPU, RSS."""
    fire, end_to_end, samples, window = data.fire, data.end_to_end, data.samples, data.window
    plt = _pyplot()
    fig, ((cdf, scatter), (cpu, rss)) = plt.subplots(2, 2, figsize=(13, 8.5))
    fig.suptitle(title, fontsize=11)
    curves = {
        "fire delay (dispatched_at)": [d for _, d in fire],
        "at the sidecar (started_at)": [d for _, d in data.at_sidecar],
        "end to end (finished_at)": end_to_end,
    }
    _cdf(cdf, curves, "CDF: dispatched_at, sidecar's started_at, finished_at - tick")

    t0 = window[0]
    # Runs sent ahead are dispatched before their tick (no delay to draw on a log scale): the
    # delay where each run starts, at the sidecar, is drawn beside the dispatch delay.
    for label, points in (("dispatched_at", fire), ("sidecar's started_at", data.at_sidecar)):
        late = [(t, d) for t, d in points if d > 0]
        if late:
            scatter.scatter(
                [t.replace(tzinfo=UTC).timestamp() - t0 for t, _ in late],
                [d * 1000 for _, d in late],
                s=3,
                alpha=0.4,
                label=label,
            )
    if fire or data.at_sidecar:
        scatter.legend(loc="upper right", fontsize=8, markerscale=3)
    scatter.set_yscale("log")
    scatter.set_xlabel("tick, seconds into the steady window")
    scatter.set_ylabel("ms after the tick (log scale)")
    scatter.set_title("Fire delay of every run: dispatched, started at the sidecar")
    scatter.grid(True, which="both", alpha=0.3)
    _resources(cpu, rss, samples, window)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _resources(
    cpu: Any,
    rss: Any,
    samples: Mapping[str, list[Sample]],
    window: tuple[float, float],
    shaded: str = "steady window",
) -> None:
    """CPU (with the replicas' event-loop wait) and RSS of every process, from ``window[0]``."""
    t0 = window[0]
    for name, series in sorted(samples.items()):
        points = cpu_series(series)
        if not points:
            continue
        replica = name.startswith("replica")
        label = f"{name} ({points[-1][2]})" if replica else name
        style, width = ("-", 1.6) if replica else ("--", 0.9)
        # Only the replicas in this legend; the other processes keep the memory panel's colours.
        line = cpu.plot(
            [t - t0 for t, _, _ in points],
            [c * 100 for _, c, _ in points],
            style,
            label=label if replica else "_nolegend_",
            linewidth=width,
        )
        rss.plot(
            [s.at - t0 for s in series],
            [s.rss_bytes / 2**20 for s in series],
            style,
            label=label,
            linewidth=width,
        )
        if replica:
            waits = wait_series(series)
            cpu.plot(
                [t - t0 for t, _ in waits],
                [w * 100 for _, w in waits],
                ":",
                color=line[0].get_color(),
                linewidth=1.2,
                label=f"{name} event loop waiting for a CPU",
            )
    for axis in (cpu, rss):
        axis.axvspan(0, window[1] - t0, color="green", alpha=0.06, label=shaded)
        axis.set_xlabel("seconds into the steady window")
        axis.grid(True, alpha=0.3)
    cpu.set_ylabel("CPU, % of one core")
    cpu.set_title("CPU per process (1 s samples); dotted: event loop waiting for a CPU")
    cpu.legend(fontsize=7, loc="upper left", ncol=2)
    rss.set_ylabel("RSS, MiB")
    rss.set_title("Resident memory per process")
    rss.legend(fontsize=7, loc="upper left", ncol=2)


def draw_burst(
    path: Path,
    title: str,
    delays: Mapping[str, Sequence[float]],
    samples: Mapping[str, list[Sample]],
    window: tuple[float, float],
) -> None:
    """Delay CDFs, the runs leaving over time after the tick, CPU and RSS around the tick."""
    plt = _pyplot()
    fig, ((cdf, count), (cpu, rss)) = plt.subplots(2, 2, figsize=(13, 8.5))
    fig.suptitle(title, fontsize=11)
    _cdf(cdf, delays, "CDF of the delay after the tick")
    _cumulative(count, delays, "Runs past each stage, after the tick")
    _resources(cpu, rss, samples, window, shaded="tick to last run finished")
    for axis in (cpu, rss):
        axis.set_xlabel("seconds after the tick")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_footprint(
    path: Path,
    title: str,
    progress: Sequence[tuple[float, int, int]],
    lags: Mapping[str, Sequence[float]],
    samples: Mapping[str, list[Sample]],
    window: tuple[float, float],
) -> None:
    """Tasks mirrored and with a status over time, per-Task lag CDF, CPU and RSS."""
    plt = _pyplot()
    fig, ((count, cdf), (cpu, rss)) = plt.subplots(2, 2, figsize=(13, 8.5))
    fig.suptitle(title, fontsize=11)
    t0 = window[0]
    for label, column in (("mirrored (rows in tasks)", 1), ("with status.nextScheduleTime", 2)):
        count.plot([p[0] - t0 for p in progress], [p[column] for p in progress], label=label)
    count.axvline(window[1] - t0, color="grey", linestyle="--", label="last apply answered")
    count.set_xlabel("seconds after the first apply")
    count.set_ylabel("Tasks")
    count.set_title("Progress")
    count.grid(True, alpha=0.3)
    count.legend(fontsize=8)
    for label, values in lags.items():
        ordered = sorted(values)
        if ordered:
            cdf.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=label)
    cdf.set_xlabel("seconds after the Task's own creation was answered")
    cdf.set_ylabel("fraction of Tasks")
    cdf.set_title("CDF per Task: time until mirrored, until it had a status")
    cdf.grid(True, alpha=0.3)
    cdf.legend(fontsize=8)
    _resources(cpu, rss, samples, window, shaded="applying")
    for axis in (cpu, rss):
        axis.set_xlabel("seconds after the first apply")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_peer(
    path: Path,
    title: str,
    delays: Mapping[str, Sequence[float]],
    served: Mapping[str, Sequence[int]],
    expected: int,
    labels: Sequence[str],
) -> None:
    """Both sides' delay CDF and cumulative count after the tick, and what each tick served.

    Linear seconds, not a log axis: Job creation times are whole seconds (a Job created within
    the tick's second shows 0 s), and the CronJob side spans up to a minute.
    """
    plt = _pyplot()
    fig, (cdf, count, ticks) = plt.subplots(1, 3, figsize=(16, 5))
    fig.suptitle(title, fontsize=11)
    _cdf(cdf, delays, "CDF: tick to Job created / to run dispatched", log=False)
    _cumulative(count, delays, "Created / dispatched after the tick (all ticks)")
    width = 0.8 / max(len(served), 1)
    for offset, (label, counts) in enumerate(served.items()):
        ticks.bar(
            [i + offset * width for i in range(len(counts))], counts, width=width, label=label
        )
    ticks.axhline(expected, color="grey", linestyle="--", label=f"due per tick ({expected})")
    ticks.set_xticks([i + width * (len(served) - 1) / 2 for i in range(len(labels))], labels)
    ticks.set_xlabel("measured tick (UTC)")
    ticks.set_ylabel("served")
    ticks.set_title("Ticks served per minute")
    ticks.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

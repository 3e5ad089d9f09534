"""The benchmark's picture: fire-delay distribution and over time, CPU and RSS of the replicas.

matplotlib is optional (it is not a dependency of Cadenza itself): without it the run still
writes ``result.json`` and says that the plot was skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

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


def draw(path: Path, data: PlotData, title: str) -> None:
    """Four panels: CDF of fire delay and end-to-end, fire delay per tick, CPU, RSS."""
    fire, end_to_end, samples, window = data.fire, data.end_to_end, data.samples, data.window
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ((cdf, scatter), (cpu, rss)) = plt.subplots(2, 2, figsize=(13, 8.5))
    fig.suptitle(title, fontsize=11)

    for label, values in (("fire delay", [d for _, d in fire]), ("end to end", end_to_end)):
        ms = sorted(v * 1000 for v in values)
        if ms:
            cdf.plot(ms, [(i + 1) / len(ms) for i in range(len(ms))], label=label)
    cdf.set_xscale("log")
    cdf.set_xlabel("milliseconds after the tick (log scale)")
    cdf.set_ylabel("fraction of runs")
    cdf.set_title("CDF: dispatched_at - tick, finished_at - tick")
    for q in (0.5, 0.9, 0.99):
        cdf.axhline(q, color="grey", linewidth=0.5, linestyle=":")
    cdf.grid(True, which="both", alpha=0.3)
    cdf.legend()

    t0 = window[0]
    if fire:
        scatter.scatter(
            [t.replace(tzinfo=UTC).timestamp() - t0 for t, _ in fire],
            [d * 1000 for _, d in fire],
            s=3,
            alpha=0.4,
        )
    scatter.set_yscale("log")
    scatter.set_xlabel("tick, seconds into the steady window")
    scatter.set_ylabel("fire delay, ms (log scale)")
    scatter.set_title("Fire delay of every run")
    scatter.grid(True, which="both", alpha=0.3)

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
        axis.axvspan(0, window[1] - t0, color="green", alpha=0.06, label="steady window")
        axis.set_xlabel("seconds into the steady window")
        axis.grid(True, alpha=0.3)
    cpu.set_ylabel("CPU, % of one core")
    cpu.set_title("CPU per process (1 s samples); dotted: event loop waiting for a CPU")
    cpu.legend(fontsize=7, loc="upper left", ncol=2)
    rss.set_ylabel("RSS, MiB")
    rss.set_title("Resident memory per process")
    rss.legend(fontsize=7, loc="upper left", ncol=2)

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""Failpoints: named instants in the leader's run pipeline where the fault suite can make this
replica die, as a crash at exactly that instant would (``kill -9``: nothing is flushed).

``CADENZA_FAILPOINTS`` (empty by default: every point is inert) names points with the pass at
which each fires, e.g. ``after-claim=3,after-dispatch=50``:

- ``after-claim``: a batch of ticks is committed as claimed runs, nothing of it dispatched;
- ``before-send``: the leader recorded which pod a run goes to, and has not sent it yet;
- ``after-dispatch``: a pod accepted a run (202), the leader has not recorded that it did.

Invariants: a point fires at most once per process, on the pass its setting names; an unknown
point name or a pass that is not a positive integer is refused at start (the setting names it),
never ignored. Unarmed, :func:`reached` costs one dictionary lookup.

WARNING: for tests only; a production replica never sets ``CADENZA_FAILPOINTS``.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping

log = logging.getLogger(__name__)

POINTS = frozenset({"after-claim", "before-send", "after-dispatch"})

_armed: dict[str, int] = {}
"""Point name -> passes left before it fires."""


def parse(spec: str) -> dict[str, int]:
    """``"after-claim=3,after-dispatch"`` -> ``{"after-claim": 3, "after-dispatch": 1}``; raises
    ValueError naming the first bad item."""
    points: dict[str, int] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, _, count = item.partition("=")
        name = name.strip()
        if name not in POINTS:
            raise ValueError(f"unknown failpoint {name!r}; known: {', '.join(sorted(POINTS))}")
        try:
            passes = int(count) if count.strip() else 1
        except ValueError:
            passes = 0
        if passes < 1:
            raise ValueError(f"failpoint {name!r}: the pass must be a positive integer")
        points[name] = passes
    return points


def arm(points: Mapping[str, int]) -> None:
    """Arm the points (from :func:`parse`); the settings call this once at start."""
    _armed.clear()
    _armed.update(points)
    if points:
        log.warning("failpoints armed (tests only): %s", dict(points))


def reached(point: str) -> None:
    """Pass ``point``: when it is armed and this is its pass, the process dies at once."""
    left = _armed.get(point)
    if left is None:
        return
    if left > 1:
        _armed[point] = left - 1
        return
    del _armed[point]
    log.warning("failpoint %s: dying now", point)
    os.kill(os.getpid(), signal.SIGKILL)

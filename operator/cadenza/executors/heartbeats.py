"""An endpoint's heartbeats, judged at each of its probes.

An Executor that sets ``heartbeatSeconds`` expects each of its endpoints (executors outside the
cluster) to call ``POST .../heartbeat`` at that interval; the rows land in
``executor_heartbeats``. At each probe the pool asks :meth:`HeartbeatCheck.error`, and the
endpoint is no candidate while it answers a reason, whatever the probes say.

Invariants:
- Silent for more than ``endpoints.MISSED_HEARTBEATS`` times the interval, or never heard
  from: unhealthy. Pods, and endpoints of Executors without ``heartbeatSeconds``: never judged.
- A failed read keeps the previous finding (a database hiccup neither heals nor fails a pod).
- The blocking read runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from sqlalchemy.engine import Engine

from cadenza.executors import endpoints
from cadenza.executors.members import ExecutorEntry, Member
from cadenza.store import heartbeats as heartbeat_rows

log = logging.getLogger(__name__)

Heartbeats = Callable[[str, str, Sequence[str]], Mapping[str, datetime]]
"""(namespace, Executor name, instance ids) -> the last heartbeat of each; blocking."""


class HeartbeatCheck:
    def __init__(self, heartbeats: Heartbeats | None, engine: Engine | None) -> None:
        """Reads with ``heartbeats``, else from ``engine``; with neither, judges nothing."""
        if heartbeats is None and engine is not None:
            heartbeats = functools.partial(heartbeat_rows.last_beats, engine)
        self._heartbeats = heartbeats

    async def error(self, executor: ExecutorEntry, member: Member, at: datetime) -> str | None:
        """Why the member's heartbeats make it unhealthy at ``at``; None when they are fresh
        or not required."""
        interval = executor.spec.heartbeat_seconds
        if member.endpoint is None or interval is None or self._heartbeats is None:
            return None
        view, instance = executor.view, member.pod.name
        try:
            beats = await asyncio.to_thread(self._heartbeats, view.namespace, view.name, [instance])
        except Exception as exc:
            log.warning("reading the heartbeat of %s/%s failed: %s", view.namespace, instance, exc)
            return member.beat_error
        allowed = interval * endpoints.MISSED_HEARTBEATS
        last = beats.get(instance)
        if last is None:
            return f"no heartbeat received (heartbeatSeconds {interval})"
        silent = (at - last).total_seconds()
        if silent > allowed:
            return (
                f"no heartbeat for {silent:.0f} s, more than {endpoints.MISSED_HEARTBEATS} x"
                f" heartbeatSeconds ({interval})"
            )
        return None

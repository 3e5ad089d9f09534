"""The pool's health findings in ``executor_instances``: batched, changed rows only, fenced.

Invariants:
- Every write runs in :func:`cadenza.store.fencing.leader_transaction`; ``Fenced`` propagates to
  the caller, which must stop leading.
- A row is written only when its findings changed; a later ``last_probe_at`` alone is worth a
  write only every ``probe_time_resolution`` seconds, so probing often does not mean writing
  often. Rows the mirror has not inserted yet are written on a later call.
- A failed write (database down) is logged when its cause changes and retried later with a
  growing delay (:attr:`HealthStore.interval`); the findings stay in memory meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy.engine import Engine

from cadenza.core.ids import Epoch
from cadenza.store import fencing, pod_health

log = logging.getLogger(__name__)

_Key = tuple[str, str]
"""(executor uid, pod uid)."""
PROBE_TIME_RESOLUTION = 10.0
_MAX_BACKOFF = 30.0


@dataclasses.dataclass(frozen=True)
class HealthRow:
    healthy: bool | None
    in_flight: int
    last_probe_at: datetime | None
    last_error: str | None


def needs_write(old: HealthRow | None, new: HealthRow, resolution: float) -> bool:
    """Whether ``new`` differs from the stored ``old`` enough to be written."""
    if old is None:
        return True
    if (old.healthy, old.in_flight, old.last_error) != (new.healthy, new.in_flight, new.last_error):
        return True
    if new.last_probe_at is None or new.last_probe_at == old.last_probe_at:
        return False
    if old.last_probe_at is None:
        return True
    return (new.last_probe_at - old.last_probe_at).total_seconds() >= resolution


class HealthStore:
    def __init__(
        self,
        engine: Engine,
        lock_name: str,
        epoch: Epoch,
        *,
        interval: float = 1.0,
        probe_time_resolution: float = PROBE_TIME_RESOLUTION,
    ) -> None:
        self._engine = engine
        self._lock_name = lock_name
        self._epoch = epoch
        self._interval = interval
        self._resolution = probe_time_resolution
        self._written: dict[_Key, HealthRow] = {}
        self._failures = 0
        self._last_failure: str | None = None
        self.writes = 0
        """Transactions committed (for tests and metrics)."""

    @property
    def interval(self) -> float:
        """Seconds to wait before the next write: the batching interval, longer after failures."""
        return min(self._interval * 2.0**self._failures, max(self._interval, _MAX_BACKOFF))

    async def write(self, rows: Mapping[_Key, HealthRow]) -> None:
        """Write the rows that changed since they were last written."""
        self._written = {key: row for key, row in self._written.items() if key in rows}
        changed = {
            key: row
            for key, row in rows.items()
            if needs_write(self._written.get(key), row, self._resolution)
        }
        if not changed:
            return
        try:
            stored = await asyncio.to_thread(self._write, changed)
        except fencing.Fenced:
            raise
        except Exception as exc:
            self._failures += 1
            if str(exc) != self._last_failure:
                log.warning("writing pod health to the database failed (will retry): %s", exc)
            self._last_failure = str(exc)
            return
        if self._failures:
            log.info("writing pod health to the database works again")
        self._failures, self._last_failure = 0, None
        self.writes += 1
        for key in stored:
            self._written[key] = changed[key]

    def _write(self, rows: Mapping[_Key, HealthRow]) -> list[_Key]:
        with fencing.leader_transaction(self._engine, self._lock_name, self._epoch) as conn:
            return [
                key
                for key, row in rows.items()
                if pod_health.update_instance_health(
                    conn, key[0], key[1], row.healthy, row.in_flight, row.last_probe_at,
                    row.last_error,
                )
            ]  # fmt: skip

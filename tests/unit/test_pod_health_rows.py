"""Which of the pool's findings are written to ``executor_instances``, and when."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cadenza.executors.persistence import HealthRow, needs_write

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
ROW = HealthRow(healthy=True, in_flight=0, last_probe_at=T0, last_error=None)


def later(seconds: float) -> HealthRow:
    return HealthRow(True, 0, T0 + timedelta(seconds=seconds), None)


def test_a_row_never_written_is_written() -> None:
    assert needs_write(None, ROW, 10)
    assert needs_write(None, HealthRow(None, 0, None, None), 10)


def test_a_changed_verdict_count_or_error_is_written() -> None:
    assert needs_write(ROW, HealthRow(False, 0, T0, "no answer within 2 s"), 10)
    assert needs_write(ROW, HealthRow(True, 3, T0, None), 10)
    assert needs_write(HealthRow(None, 0, None, None), ROW, 10)


def test_a_newer_probe_time_alone_is_written_at_the_resolution() -> None:
    assert not needs_write(ROW, ROW, 10)
    assert not needs_write(ROW, later(9.999), 10)
    assert needs_write(ROW, later(10), 10)

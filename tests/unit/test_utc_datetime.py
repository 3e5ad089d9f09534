"""The history's time columns take aware datetimes only and store them as UTC milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.dialects import mysql

from cadenza.store.schema import UtcDateTime

STORED = datetime(2026, 12, 3, 9, 30, 15, 123000)
"""What the column holds: naive UTC, cut to milliseconds."""


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 12, 3, 9, 30, 15, 123456, tzinfo=UTC),
        datetime(2026, 12, 3, 11, 30, 15, 123999, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 12, 3, 10, 30, 15, 123000, tzinfo=ZoneInfo("Europe/Berlin")),
    ],
    ids=["UTC", "fixed offset", "zone"],
)
def test_an_aware_datetime_is_stored_as_utc_milliseconds(value: datetime) -> None:
    assert UtcDateTime().process_bind_param(value, mysql.dialect()) == STORED


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        UtcDateTime().process_bind_param(STORED, mysql.dialect())


def test_none_stays_none() -> None:
    assert UtcDateTime().process_bind_param(None, mysql.dialect()) is None

"""A failure repeating across many objects is one warning per interval, counting the rest."""

from __future__ import annotations

import logging

import pytest

from cadenza.logthrottle import Throttled


def test_the_first_failure_is_logged_and_the_next_ones_are_counted_into_the_next_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    throttled = Throttled(logging.getLogger("t"), "status writes", every=30, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "t"):
        for i in range(5):
            throttled.failed("status of task ns/t%d not written: %s", i, "HTTP 503")
            now[0] += 1
        assert caplog.messages == ["status of task ns/t0 not written: HTTP 503"]
        now[0] = 130.0
        throttled.failed("status of task ns/%s not written: %s", "t9", "HTTP 503")
    assert caplog.messages[1:] == [
        "status of task ns/t9 not written: HTTP 503"
        " (and 4 more status writes failed since the last warning)"
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_failures_an_interval_apart_are_each_logged(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    throttled = Throttled(logging.getLogger("t"), "status writes", every=30, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "t"):
        for _ in range(3):
            throttled.failed("failed")
            now[0] += 30
    assert caplog.messages == ["failed"] * 3

"""What a sidecar's answer means to the dispatcher, and what the dispatch body looks like."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from cadenza.dispatch.client import (
    DispatchRequest,
    DispatchResult,
    Outcome,
    classify,
    probe_result,
    rfc3339,
)


def request(**changes: object) -> DispatchRequest:
    values: dict[str, object] = {
        "execution_key": "42",
        "task_uid": "0b6c7f3e-0000-4000-8000-000000000001",
        "task": "team-a/nightly",
        "epoch": 3,
        "handler": "echo",
        "payload": {"rows": [1, 2]},
        "scheduled_at": datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
        "attempt": 2,
        "timeout_seconds": 60,
        "callback_url": "http://cadenza.cadenza-system:8080/api/v1/callbacks",
        "callback_token": "secret",
    }
    values.update(changes)
    return DispatchRequest(**values)  # type: ignore[arg-type]


def test_the_body_uses_the_protocol_field_names() -> None:
    assert request().to_json() == {
        "executionId": "42",
        "taskUid": "0b6c7f3e-0000-4000-8000-000000000001",
        "task": "team-a/nightly",
        "epoch": 3,
        "handler": "echo",
        "payload": {"rows": [1, 2]},
        "scheduledAt": "2024-05-01T12:00:00.123Z",
        "attempt": 2,
        "timeoutSeconds": 60,
        "callbackUrl": "http://cadenza.cadenza-system:8080/api/v1/callbacks",
        "callbackToken": "secret",
    }


def test_ticks_are_sent_in_utc_with_milliseconds() -> None:
    paris = timezone(timedelta(hours=2))
    assert rfc3339(datetime(2024, 5, 1, 14, 0, 0, 999999, tzinfo=paris)) == (
        "2024-05-01T12:00:00.999Z"
    )


def test_the_attempts_deadline_goes_with_it_so_the_pod_never_starts_it_late() -> None:
    deadline = datetime(2024, 5, 1, 12, 1, 0, 500000, tzinfo=UTC)
    assert request(deadline=deadline).to_json()["deadline"] == "2024-05-01T12:01:00.500Z"
    assert "deadline" not in request().to_json()


def test_a_naive_tick_or_deadline_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        request(scheduled_at=datetime(2024, 5, 1, 12, 0))
    with pytest.raises(ValueError, match="deadline"):
        request(deadline=datetime(2024, 5, 1, 12, 0))


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (202, Outcome.ACCEPTED),
        (200, Outcome.DUPLICATE),
        (429, Outcome.BUSY),
        (503, Outcome.DRAINING),
        (400, Outcome.REJECTED),
        (401, Outcome.REJECTED),
        (403, Outcome.REJECTED),
        (413, Outcome.REJECTED),
        (404, Outcome.REJECTED),
        (500, Outcome.UNREACHABLE),
        (502, Outcome.UNREACHABLE),
        (504, Outcome.UNREACHABLE),
    ],
)
def test_each_status_has_one_outcome(status: int, outcome: Outcome) -> None:
    assert classify(status) is outcome


@pytest.mark.parametrize(
    ("outcome", "status", "another"),
    [
        (Outcome.ACCEPTED, 202, False),
        (Outcome.DUPLICATE, 200, False),
        (Outcome.BUSY, 429, True),
        (Outcome.DRAINING, 503, True),
        (Outcome.UNREACHABLE, None, True),
        (Outcome.UNREACHABLE, 502, True),
        (Outcome.REJECTED, 401, True),  # this pod has another token; another may not
        (Outcome.REJECTED, 403, True),
        (Outcome.REJECTED, 400, False),  # every pod refuses the same body
        (Outcome.REJECTED, 413, False),
    ],
)
def test_which_answers_send_the_run_elsewhere(
    outcome: Outcome, status: int | None, another: bool
) -> None:
    result = DispatchResult(outcome, status, None, None, None)
    assert result.try_another_pod is another
    assert result.started is (outcome in (Outcome.ACCEPTED, Outcome.DUPLICATE))


def test_only_an_ok_health_answer_is_healthy() -> None:
    ok = probe_result(200, {"status": "ok", "inFlight": 2, "capacity": 4}, b"")
    assert (ok.ok, ok.in_flight, ok.capacity, ok.draining, ok.error) == (True, 2, 4, False, None)

    draining = probe_result(503, {"status": "draining", "draining": True, "inFlight": 1}, b"")
    assert (draining.ok, draining.draining, draining.in_flight) == (False, True, 1)
    assert draining.error == "draining (HTTP 503)"

    proxy = probe_result(502, None, b"<html>Bad Gateway</html>")
    assert (proxy.ok, proxy.error) == (False, "HTTP 502: <html>Bad Gateway</html>")

    odd = probe_result(200, {"status": "starting", "inFlight": True}, b"")
    assert (odd.ok, odd.in_flight) == (False, None)
    assert odd.error is not None and odd.error.startswith("HTTP 200")

"""What an Executor's status says, and which changes are worth a PATCH to the API server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cadenza.executors.members import ExecutorSnapshot, PodSnapshot
from cadenza.executors.status import build_status, needs_write

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
REFRESH = 30.0


def pod(name: str, **changes: Any) -> PodSnapshot:
    values: dict[str, Any] = {
        "name": name, "uid": f"uid-{name}", "ip": "10.0.0.7", "phase": "Running", "ready": True,
        "healthy": True, "candidate": True, "in_flight": 0, "last_probe_time": T0,
        "last_error": None, "probes": 1, "failed_probes": 0, "consecutive_failures": 0,
        "consecutive_successes": 1,
    }  # fmt: skip
    values.update(changes)
    return PodSnapshot(**values)


def executor(*pods: PodSnapshot, token_error: str | None = None) -> ExecutorSnapshot:
    return ExecutorSnapshot("uid-x", "team-a", "workers", 3, pods, token_error)


def available(status: dict[str, Any]) -> dict[str, Any]:
    (condition,) = [c for c in status["conditions"] if c["type"] == "Available"]
    return dict(condition)


def test_the_status_lists_pods_counts_and_availability() -> None:
    status = build_status(
        executor(
            pod("a", in_flight=2),
            pod("b", healthy=False, candidate=False, last_error="no answer within 2 s"),
            pod("c", ip=None, phase="Pending", ready=False, healthy=None, candidate=False,
                last_probe_time=None),
        ),
        [],
        T0,
    )  # fmt: skip
    assert status["pods"] == [
        {"name": "a", "ip": "10.0.0.7", "phase": "Running", "ready": True, "healthy": True,
         "inFlight": 2, "lastProbeTime": "2024-05-01T12:00:00.000Z"},
        {"name": "b", "ip": "10.0.0.7", "phase": "Running", "ready": True, "healthy": False,
         "inFlight": 0, "lastProbeTime": "2024-05-01T12:00:00.000Z",
         "lastError": "no answer within 2 s"},
        {"name": "c", "phase": "Pending", "ready": False, "healthy": False, "inFlight": 0},
    ]  # fmt: skip
    assert (status["totalPods"], status["readyPods"], status["healthyPods"]) == (3, 2, 1)
    assert status["observedGeneration"] == 3
    assert available(status) == {
        "type": "Available", "status": "True", "reason": "HealthyPods",
        "message": "1 of 3 pods can take runs", "observedGeneration": 3,
        "lastTransitionTime": "2024-05-01T12:00:00Z",
    }  # fmt: skip


def test_unavailability_explains_itself() -> None:
    def message(snapshot: ExecutorSnapshot) -> str:
        condition = available(build_status(snapshot, [], T0))
        assert (condition["status"], condition["reason"]) == ("False", "NoHealthyPods")
        return str(condition["message"])

    assert message(executor()) == "no pod matches spec.selector in this namespace"
    unready = pod("a", ready=False, candidate=False)
    assert message(executor(unready)) == "none of the 1 pods is Running and Ready"
    sick = pod("a", healthy=False, candidate=False)
    assert message(executor(sick)) == "1 of 1 pods are Ready but none passes the health check"
    no_token = executor(pod("a", candidate=False), token_error="Secret x/y does not exist")
    assert message(no_token) == "no pod can take runs: Secret x/y does not exist"


def test_the_transition_time_moves_only_when_the_status_does() -> None:
    first = build_status(executor(pod("a")), [], T0)
    later = T0 + timedelta(minutes=5)
    same = build_status(executor(pod("a"), pod("b")), first["conditions"], later)
    assert available(same)["lastTransitionTime"] == "2024-05-01T12:00:00Z"
    flipped = build_status(executor(pod("a", candidate=False)), same["conditions"], later)
    assert available(flipped)["lastTransitionTime"] == "2024-05-01T12:05:00Z"


def test_conditions_of_other_writers_are_kept() -> None:
    theirs = {"type": "Audited", "status": "True", "reason": "Ok", "message": "",
              "lastTransitionTime": "2024-01-01T00:00:00Z"}  # fmt: skip
    status = build_status(executor(pod("a")), [theirs], T0)
    assert [c["type"] for c in status["conditions"]] == ["Available", "Audited"]
    assert status["conditions"][1] == theirs


def test_a_newer_probe_time_alone_waits_for_the_refresh_interval() -> None:
    stored = build_status(executor(pod("a")), [], T0)
    soon = build_status(executor(pod("a", last_probe_time=T0 + timedelta(seconds=29))), [], T0)
    late = build_status(executor(pod("a", last_probe_time=T0 + timedelta(seconds=30))), [], T0)
    assert not needs_write(stored, soon, REFRESH)
    assert needs_write(stored, late, REFRESH)


def test_what_a_person_reads_is_written_at_once() -> None:
    stored = build_status(executor(pod("a")), [], T0)
    for changed in (
        executor(pod("a", in_flight=1)),
        executor(pod("a", healthy=False, candidate=False, last_error="HTTP 500: boom")),
        executor(pod("a", ready=False, candidate=False)),
        executor(pod("a"), pod("b")),
        executor(),
    ):
        assert needs_write(stored, build_status(changed, stored["conditions"], T0), REFRESH)
    assert not needs_write(stored, build_status(executor(pod("a")), stored["conditions"], T0), 30)


def test_fields_others_keep_in_the_status_do_not_force_a_write() -> None:
    ours = build_status(executor(pod("a")), [], T0)
    stored = {**ours, "somethingElse": {"kept": True}}
    assert not needs_write(stored, ours, REFRESH)

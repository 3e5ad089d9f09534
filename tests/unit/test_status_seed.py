"""A Task's stored status as a new leader's status book takes it over, read from the watched
object: what it keeps, and that any shape the status subresource may hold reads without raising
(a view that raised would drop the Task from the index)."""

from __future__ import annotations

from typing import Any

import kubernetes
import pytest

from cadenza.core.ids import TaskUid
from cadenza.kube import conditions
from cadenza.kube.views import StatusSeed, TaskView
from cadenza.metrics import Metrics
from cadenza.scheduling.status import TaskStatusBook

BODY = {
    "metadata": {"uid": "u1", "namespace": "ns", "name": "t"},
    "spec": {"schedule": "* * * * * *", "executors": [{"name": "pool"}]},
}


def test_conditions_times_and_counts_are_kept() -> None:
    status = {
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-01T10:00:00Z",
             "reason": "Valid", "message": "", "observedGeneration": 1},
            {"type": "Scheduled", "status": "False", "lastTransitionTime": "2026-12-01T11:00:00Z"},
        ],
        "consecutiveFailures": 3,
        "counters": {"succeeded": 10, "skipped": 2},
    }  # fmt: skip
    seed = TaskView.from_body({**BODY, "status": status}).status_seed
    assert seed == StatusSeed(
        (
            ("Ready", "True", "2026-12-01T10:00:00Z"),
            ("Scheduled", "False", "2026-12-01T11:00:00Z"),
        ),
        failures=3,
        skipped=2,
    )


def test_a_task_without_status_seeds_nothing() -> None:
    assert TaskView.from_body(BODY).status_seed == StatusSeed()


@pytest.mark.parametrize(
    "status",
    [
        "garbage",
        ["a"],
        {"conditions": "x"},
        {"conditions": [1, None, {"type": 5}, {"type": "Ready", "status": "True"}]},
        {"consecutiveFailures": "3", "counters": ["skipped"]},
        {"consecutiveFailures": -1, "counters": {"skipped": True}},
        {"consecutiveFailures": 2.5, "counters": {"skipped": None}},
    ],
)
def test_any_shape_of_status_reads_without_raising(status: Any) -> None:
    seed = TaskView.from_body({**BODY, "status": status}).status_seed
    assert seed.failures == 0 and seed.skipped == 0
    assert seed.transitions == ()


def test_a_new_leaders_book_keeps_the_transition_time_of_an_unchanged_condition() -> None:
    """Seeded from the watched object, not from a GET: a condition whose status did not change
    keeps the time it last changed; one that changed gets a new time; no GET is made (the
    client here reaches no API server)."""
    seed = StatusSeed((("Ready", "True", "2026-12-01T10:00:00Z"),
                       ("ExecutorAvailable", "True", "2026-12-01T10:00:00Z")), 0, 0)  # fmt: skip
    book = TaskStatusBook(kubernetes.client.ApiClient(), None, Metrics())  # type: ignore[arg-type]
    uid = TaskUid("u1")
    book.conditions(uid, "ns", "t", 1, conditions.for_task(1, (), ["gone"]))
    entry = book._entries[uid]
    entry.seed(seed)
    written = {c["type"]: c for c in entry.render_conditions()}
    assert written["Ready"]["lastTransitionTime"] == "2026-12-01T10:00:00Z"
    assert written["ExecutorAvailable"]["status"] == "False"
    assert written["ExecutorAvailable"]["lastTransitionTime"] != "2026-12-01T10:00:00Z"


@pytest.mark.parametrize(("value", "read"), [(4, 4), ("4", 0), (-1, 0), (True, 0), (None, 0)])
def test_the_generation_a_status_answers_is_kept(value: Any, read: int) -> None:
    seed = TaskView.from_body({**BODY, "status": {"observedGeneration": value}}).status_seed
    assert seed.observed_generation == read

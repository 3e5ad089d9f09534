"""A Task's status summary, read from its history: counters, latest times, open runs, the last
run and the failure streak, each from one snapshot of the rows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Connection, Engine

from cadenza.core.ids import TaskUid
from cadenza.core.transitions import RunStatus
from cadenza.store import schema, summary

pytestmark = pytest.mark.mariadb

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
S = RunStatus


def record(
    engine: Engine,
    task: TaskUid,
    *statuses: RunStatus,
    origin: str = "schedule",
    start: int = 0,
) -> None:
    """One run per status, a second apart from ``start``; finished unless open."""
    rows: list[dict[str, Any]] = []
    for i, status in enumerate(statuses, start=start):
        tick = T0 + timedelta(seconds=i)
        open_ = status in (S.QUEUED, S.CLAIMED, S.DISPATCHED, S.RUNNING)
        rows.append(
            {
                "task_uid": task,
                "namespace": "ns",
                "task_name": "task",
                "scheduled_at": tick,
                "origin": origin,
                "requested_at": tick,
                "status": status.value,
                "attempt": 1,
                "max_attempts": 1,
                "epoch": 1,
                "pod_name": None if status is S.QUEUED else f"pod-{i}",
                "dispatched_at": None if status is S.QUEUED else tick,
                "finished_at": None if open_ else tick + timedelta(milliseconds=500),
                "error": "boom" if status is S.FAILED else None,
                "created_at": tick,
                "updated_at": tick,
            }
        )
    with engine.begin() as conn:
        conn.execute(schema.task_executions.insert(), rows)


def summarise(engine: Engine, task: TaskUid) -> summary.Summary:
    return summary.read_many(engine, [task])[task]


@pytest.fixture
def task() -> TaskUid:
    return TaskUid(str(uuid.uuid4()))


def test_a_task_without_runs_has_an_empty_summary(engine: Engine, task: TaskUid) -> None:
    facts = summarise(engine, task)
    assert facts.last is None and facts.open == []
    assert facts.last_schedule_at is None and facts.last_success_at is None
    assert facts.counters == {
        "succeeded": 0,
        "failed": 0,
        "cancelled": 0,
        "skipped": 0,
        "misfired": 0,
    }
    assert facts.consecutive_failures == 0


def test_counters_and_latest_times(engine: Engine, task: TaskUid) -> None:
    ended = (S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.LOST, S.SKIPPED, S.CANCELLED, S.SUCCEEDED)
    record(engine, task, *ended)
    record(engine, task, S.SUCCEEDED, S.FAILED, origin="misfire", start=10)
    record(engine, TaskUid(str(uuid.uuid4())), S.SUCCEEDED, S.FAILED, start=20)

    facts = summarise(engine, task)

    assert facts.counters == {
        "succeeded": 3,
        "failed": 4,
        "cancelled": 1,
        "skipped": 1,
        "misfired": 2,
    }
    assert facts.last_schedule_at == T0 + timedelta(seconds=11)
    assert facts.last_success_at == T0 + timedelta(seconds=10, milliseconds=500)
    assert facts.last is not None
    assert (facts.last.status, facts.last.error, facts.last.scheduled_at) == (
        S.FAILED,
        "boom",
        T0 + timedelta(seconds=11),
    )


def test_open_runs_oldest_first_and_the_last_run(engine: Engine, task: TaskUid) -> None:
    record(engine, task, S.SUCCEEDED, S.RUNNING, S.FAILED, S.DISPATCHED, S.QUEUED)

    facts = summarise(engine, task)

    assert [(r.status, r.pod_name) for r in facts.open] == [
        (S.RUNNING, "pod-1"),
        (S.DISPATCHED, "pod-3"),
        (S.QUEUED, None),
    ]
    assert [r.dispatched_at for r in facts.open] == [
        T0 + timedelta(seconds=1),
        T0 + timedelta(seconds=3),
        None,
    ]
    assert facts.last is not None
    assert (facts.last.status, facts.last.attempt) == (S.QUEUED, 1)
    assert facts.last.id == facts.open[-1].id


@pytest.mark.parametrize(
    ("history", "streak"),
    [
        ((S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.LOST), 3),
        # skipped ticks neither count nor break it; an open run is not finished
        ((S.SUCCEEDED, S.FAILED, S.SKIPPED, S.FAILED, S.RUNNING), 2),
        ((S.FAILED, S.FAILED, S.SUCCEEDED), 0),
        # a cancelled run is not a failure: it ends the streak
        ((S.FAILED, S.CANCELLED, S.FAILED), 1),
        ((S.FAILED, S.FAILED), 2),
    ],
)
def test_the_failure_streak(
    engine: Engine, task: TaskUid, history: tuple[RunStatus, ...], streak: int
) -> None:
    record(engine, task, *history)
    assert summarise(engine, task).consecutive_failures == streak


def test_the_failure_streak_is_counted_up_to_a_hundred(engine: Engine, task: TaskUid) -> None:
    record(engine, task, S.SUCCEEDED, *[S.FAILED] * 130)
    assert summarise(engine, task).consecutive_failures == 100


def test_all_of_it_comes_from_one_snapshot(
    engine: Engine, task: TaskUid, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that succeeds while the summary is read does not reset the streak beside a last run
    that still shows the failure."""
    record(engine, task, S.SUCCEEDED, S.FAILED, S.FAILED)
    streaks = summary._streaks

    def meanwhile(conn: Connection, of: list[TaskUid]) -> dict[str, int]:
        record(engine, task, S.SUCCEEDED, start=3)  # committed on a session of its own
        return streaks(conn, of)

    monkeypatch.setattr(summary, "_streaks", meanwhile)
    facts = summarise(engine, task)

    assert facts.last is not None and facts.last.status is S.FAILED
    assert facts.counters["succeeded"] == 1
    assert facts.consecutive_failures == 2
    monkeypatch.undo()
    assert summarise(engine, task).consecutive_failures == 0


def test_many_tasks_in_one_read_get_what_each_would_alone(engine: Engine) -> None:
    """The status flusher reads every Task it writes in one go: each summary is the one a read of
    that Task alone gives, runs of the others never counted in."""
    tasks = [TaskUid(str(uuid.uuid4())) for _ in range(4)]
    record(engine, tasks[0], S.SUCCEEDED, S.FAILED, S.FAILED, S.RUNNING)
    record(engine, tasks[1], S.FAILED, S.SKIPPED, S.SUCCEEDED, S.QUEUED, S.CLAIMED)
    record(engine, tasks[2], S.SUCCEEDED, S.TIMED_OUT, origin="misfire")
    # tasks[3] has no runs

    together = summary.read_many(engine, [*tasks, tasks[0]])

    assert list(together) == tasks
    assert together == {task: summarise(engine, task) for task in tasks}
    assert together[tasks[0]].consecutive_failures == 2
    assert [b.status for b in together[tasks[1]].open] == [S.QUEUED, S.CLAIMED]
    assert together[tasks[2]].counters["misfired"] == 2
    assert together[tasks[3]].last is None
    assert summary.read_many(engine, []) == {}


@pytest.mark.parametrize("analyzed", [False, True], ids=["stale statistics", "fresh statistics"])
def test_a_summary_reads_the_rows_of_its_tasks_only(engine: Engine, analyzed: bool) -> None:
    """Its cost follows the Tasks' own history, not the table: counted by the server's row
    reads. Before, with the statistics of a table that had just grown, the server walked the
    primary key and read every Task's runs for each status write."""
    mine = [TaskUid(str(uuid.uuid4())) for _ in range(2)]
    for task in mine:
        record(engine, task, *[S.SUCCEEDED, S.FAILED, S.SKIPPED] * 10, S.RUNNING)
    for _ in range(100):
        record(engine, TaskUid(str(uuid.uuid4())), *[S.SUCCEEDED, S.FAILED] * 15, S.QUEUED)
    with engine.connect() as conn:
        if analyzed:
            conn.exec_driver_sql("ANALYZE TABLE task_executions").all()
        conn.exec_driver_sql("FLUSH STATUS")  # this session's counters
        facts = summary.summaries(conn, mine)
        counters = dict(conn.exec_driver_sql("SHOW SESSION STATUS LIKE 'Handler_read%%'").all())
        conn.rollback()

    assert facts[mine[0]].counters == {
        "succeeded": 10,
        "failed": 10,
        "cancelled": 0,
        "skipped": 10,
        "misfired": 0,
    }
    rows_read = sum(int(v) for k, v in counters.items() if k != "Handler_read_key")
    assert rows_read < 10 * 31 * len(mine), counters  # of 3,162 rows in the table

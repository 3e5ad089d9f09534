"""Which lane a Task's status write waits in: a status that answers a Task created or edited
goes in the spec lane (its own rate, so a Task applied among thousands that fire is written
within seconds); one that only follows firing goes in the runs lane, whose rate bounds the writes
firing causes. A new leader takes over what each stored status already answers, so a takeover
rewrites statuses at the runs lane's rate, not the spec lane's."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from cadenza.core.ids import TaskUid
from cadenza.kube.views import StatusSeed, TaskView
from cadenza.scheduling.plans import plan_of
from cadenza.scheduling.writequeue import Lane
from cadenza.store import summary
from tests.unit.test_cancel_during_dispatch import until
from tests.unit.test_deleted_task_state import NOW, Book, view


def edited(v: TaskView, generation: int) -> TaskView:
    return TaskView.of(v.uid, v.namespace, v.name, generation, v.spec)


async def test_a_created_task_waits_in_the_spec_lane_then_refreshes_in_the_runs_lane(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    b = Book(monkeypatch)
    plan = plan_of(view("created"))
    b.book.schedule(plan, NOW)
    assert b.book._due.lane_of(plan.uid) is Lane.SPEC
    assert await b.flush() == [plan.uid]
    b.book.run_changed(plan.uid)
    assert b.book._due.lane_of(plan.uid) is Lane.RUNS


async def test_an_edit_moves_a_waiting_task_up_to_the_spec_lane(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    b = Book(monkeypatch)
    v = view("edited")
    b.book.schedule(plan_of(v), NOW)
    await b.flush()
    b.book.run_changed(plan_of(v).uid)
    b.book.schedule(plan_of(edited(v, 2)), NOW)
    assert b.book._due.lane_of(plan_of(v).uid) is Lane.SPEC


async def test_a_refused_write_of_a_created_task_stays_in_the_spec_lane(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    b = Book(monkeypatch)
    plan = plan_of(view("refused"))
    b.book.schedule(plan, NOW)
    b.refusal = 503
    assert await b.flush() == [plan.uid]
    assert b.book._due.lane_of(plan.uid) is Lane.SPEC


@pytest.mark.parametrize(("observed", "lane"), [(0, Lane.SPEC), (1, Lane.RUNS), (2, Lane.RUNS)])
async def test_a_new_leader_takes_over_what_the_stored_status_answers(
    monkeypatch: pytest.MonkeyPatch, observed: int, lane: Lane
) -> None:
    """The Task is at generation 1; its stored status answers ``observed``."""
    b = Book(monkeypatch, StatusSeed(observed_generation=observed))
    plan = plan_of(view("taken-over"))
    b.book.schedule(plan, NOW)
    assert b.book._due.lane_of(plan.uid) is lane


async def test_the_statuses_waiting_are_exposed_per_lane_while_leading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    b = Book(monkeypatch, StatusSeed(observed_generation=1))
    b.book.schedule(plan_of(view("taken-over")), NOW)
    b.book.schedule(plan_of(edited(view("edited"), 2)), NOW)
    b.book.schedule(plan_of(edited(view("edited-too"), 3)), NOW)

    def waiting(lane: str) -> float | None:
        return b.metrics.registry.get_sample_value(
            "cadenza_task_status_writes_waiting", {"lane": lane}
        )

    running = asyncio.create_task(b.book.run(lambda: False))  # the lease in doubt: no writes
    await until(lambda: waiting("spec") == 2 and waiting("runs") == 1, "the gauge per lane")
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    assert waiting("spec") == 0 and waiting("runs") == 0, "a replica that stops leading"


async def test_a_write_that_fails_after_its_task_went_queues_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The failed write would queue the Task again; the flusher's next turn then looked up an
    entry that was gone and raised, which would end the leader's term."""
    b = Book(monkeypatch)
    plan = plan_of(view("went"))
    b.book.schedule(plan, NOW)

    def unreachable(engine: object, tasks: list[TaskUid]) -> dict[TaskUid, summary.Summary]:
        b.book.gone(plan)  # the Task goes while its history is being read
        raise OSError("the database is unreachable")

    monkeypatch.setattr(summary, "read_many", unreachable)
    assert await b.flush() == [plan.uid]
    assert b.book._due.lane_of(plan.uid) is None
    assert await b.flush() == []

"""What the leader keeps per Task goes when the Task goes: the status book's entry and its
``task`` series, the scheduler's fire time and waiting claims, the balancer state, the pods'
outboxes. Each part is driven alone, over the in-memory store, with the Task deleted at the moment
that used to leave something behind (also while a write or a dispatch was in flight)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes
import pytest

from cadenza.core.ids import ExecutionId, TaskUid
from cadenza.core.transitions import RunStatus
from cadenza.dispatch.client import DispatchRequest, DispatchResult, Outcome
from cadenza.executors.members import PodCandidate
from cadenza.kube import objects
from cadenza.kube.hub import EXECUTORS_INDEX, PODS_INDEX, TASKS_INDEX, Hub
from cadenza.kube.views import StatusSeed, TaskView
from cadenza.metrics import Metrics
from cadenza.scheduling import keyedheap
from cadenza.scheduling.dispatcher import Dispatcher, Sent
from cadenza.scheduling.firetimes import FireTimes
from cadenza.scheduling.openruns import Run
from cadenza.scheduling.plans import TaskPlan, plan_of
from cadenza.scheduling.scheduler import Scheduler
from cadenza.scheduling.status import TaskStatusBook
from cadenza.store import summary
from cadenza.store.executions import Origin
from cadenza.store.memory import MemoryRunStore
from cadenza.store.port import NewRun
from tests.unit.test_cancel_during_dispatch import until

NOW = datetime(2026, 12, 2, 12, 0, 0, 500000, tzinfo=UTC)
WRITES = "cadenza_task_status_writes_total"
FAILURES = "cadenza_task_consecutive_failures"


def view(name: str, **spec: Any) -> TaskView:
    body = {"schedule": "* * * * * *", "executors": [{"name": "workers"}], **spec}
    return TaskView.of(f"uid-{name}", "ns", name, 1, body)


def series(metrics: Metrics, name: str, metric: str = WRITES) -> float | None:
    """The Task's status writes (or another ``task`` series) as exposed (None: no series)."""
    return metrics.registry.get_sample_value(metric, {"task": f"ns/{name}"})


def task_series(metrics: Metrics, name: str) -> list[float | None]:
    return [series(metrics, name, metric) for metric in (WRITES, FAILURES)]


def tracked(metrics: Metrics, part: str) -> float | None:
    return metrics.registry.get_sample_value("cadenza_leader_tasks_tracked", {"part": part})


# -- the status book ------------------------------------------------------------------------


class Book:
    """A status book whose writes reach no API server: each patch of a status is taken, or
    waits for the test, or finds the Task gone (404). Every write has a new status to patch."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, seed: StatusSeed | None = None) -> None:
        self.metrics = Metrics()
        client = kubernetes.client.ApiClient()
        engine: Any = None  # the summary is stubbed
        seeds = lambda ns, n: seed or StatusSeed()  # noqa: E731
        self.book = TaskStatusBook(client, engine, self.metrics, seeds=seeds)
        self.hold: asyncio.Event | None = None
        self.missing = False
        self.refusal: int | None = None
        """The status the API server answers a patch with, when it refuses it."""
        self.runs = 0
        self.streak = 0
        """The consecutive failures the summary reports."""
        monkeypatch.setattr(summary, "read_many", self._summaries)
        monkeypatch.setattr(self.book._objects, "patch_status", self._patch)
        monkeypatch.setattr(self.book._events, "post", lambda *args: None)

    def _summaries(self, engine: Any, tasks: list[TaskUid]) -> dict[TaskUid, summary.Summary]:
        self.runs += 1  # a new run each time: the status differs from the one last written
        counters = {"succeeded": self.runs, "skipped": 0}
        return {
            task: summary.Summary(None, None, None, [], counters, self.streak) for task in tasks
        }

    def _patch(self, *args: Any) -> None:
        if self.missing:
            raise objects.ApiError(404, "Not Found")
        if self.refusal is not None:
            raise objects.ApiError(self.refusal, "Refused")
        if self.hold is not None:
            # In a thread of the pool: wait for the test's word.
            asyncio.run_coroutine_threadsafe(self.hold.wait(), self.loop).result(10)

    async def write(self, plan: TaskPlan) -> None:
        self.loop = asyncio.get_running_loop()
        await self.book._write_all([self.book._entries[plan.uid]])

    async def flush(self) -> list[TaskUid]:
        """One turn of the flusher: the Tasks it may write now, written."""
        self.loop = asyncio.get_running_loop()
        chosen = self.book._due.take(lambda: True)
        await self.book._write_all([self.book._entries[uid] for uid in chosen])
        return chosen


async def test_a_deleted_task_leaves_no_status_entry_and_no_series(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    b = Book(monkeypatch)
    kept, deleted = plan_of(view("kept")), plan_of(view("deleted"))
    for plan in (kept, deleted):
        b.book.schedule(plan, NOW)
        await b.write(plan)
    assert series(b.metrics, "deleted") == 1.0

    b.book.gone(deleted)

    assert deleted.uid not in b.book._entries
    assert task_series(b.metrics, "deleted") == [None, None]
    assert series(b.metrics, "kept") == 1.0
    # A late word about its runs brings nothing back.
    b.book.run_changed(deleted.uid)
    assert deleted.uid not in b.book._entries


async def test_a_write_in_flight_when_the_task_goes_leaves_no_series(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    b = Book(monkeypatch)
    plan = plan_of(view("racing"))
    b.book.schedule(plan, NOW)
    b.hold = asyncio.Event()
    writing = asyncio.create_task(b.write(plan))
    await asyncio.sleep(0.05)  # the write is in its thread, waiting
    b.book.gone(plan)
    b.hold.set()
    await writing
    assert task_series(b.metrics, "racing") == [None, None]


async def test_a_write_that_finds_the_task_gone_drops_its_entry_and_series(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    b = Book(monkeypatch)
    plan = plan_of(view("vanished"))
    b.book.schedule(plan, NOW)
    await b.write(plan)
    assert series(b.metrics, "vanished") == 1.0
    b.missing = True
    b.book.run_changed(plan.uid)
    await b.write(plan)
    assert plan.uid not in b.book._entries
    assert task_series(b.metrics, "vanished") == [None, None]


@pytest.mark.parametrize("refusal", [403, 429, 500, 503])
async def test_a_write_the_api_server_refuses_is_tried_again_later(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, refusal: int
) -> None:
    """As while an API server restarts: the write fails, the Task stays due, nothing raises."""
    b = Book(monkeypatch)
    plans = [plan_of(view(f"refused-{i}")) for i in range(3)]
    b.refusal = refusal
    with caplog.at_level(logging.WARNING, "cadenza.scheduling.status"):
        for plan in plans:
            b.book.schedule(plan, NOW)
            await b.write(plan)
    assert all(b.book._due.lane_of(plan.uid) is not None for plan in plans)
    assert series(b.metrics, "refused-0") is None
    # One warning for the three, not one for each (the next one, 30 s on, counts the others).
    assert caplog.messages == ["status of task ns/refused-0 not written: Refused"]
    b.refusal = None
    await b.write(plans[0])
    assert series(b.metrics, "refused-0") == 1.0


async def test_a_book_that_stops_leading_removes_every_task_series(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    b = Book(monkeypatch)
    plans = [plan_of(view(f"t{i}")) for i in range(3)]
    for plan in plans:
        b.book.schedule(plan, NOW)
        await b.write(plan)
    running = asyncio.create_task(b.book.run(lambda: False))
    await until(lambda: tracked(b.metrics, "status") == 3, "the book to count its Tasks")
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    assert [task_series(b.metrics, f"t{i}") for i in range(3)] == [[None, None]] * 3
    assert tracked(b.metrics, "status") == 0


async def test_consecutive_failures_follow_the_status_each_write_reports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    b = Book(monkeypatch)
    plan = plan_of(view("flaky"))
    b.book.schedule(plan, NOW)
    for streak in (0, 3, 0):  # a success ends a streak
        b.streak = streak
        b.book.run_changed(plan.uid)
        await b.write(plan)
        assert series(b.metrics, "flaky", FAILURES) == streak


# -- the scheduler --------------------------------------------------------------------------


class Ledger:
    """The run half of the leader, reduced to what the scheduler asks and tells."""

    def __init__(self) -> None:
        self.gone: list[TaskUid] = []

    def in_flight(self, task: TaskUid) -> int:
        return 0

    def queued(self, task: TaskUid) -> int:
        return 0

    def sends_ahead(self, task: TaskUid) -> bool:
        return False

    def task_gone(self, task: TaskUid) -> None:
        self.gone.append(task)

    def task_suspended(self, task: TaskUid) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def scene(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Scheduler, Ledger, dict[tuple[str, str], list[TaskView]], list[Any]]]:
    tasks: dict[tuple[str, str], list[TaskView]] = {}
    hub = Hub(indexes={TASKS_INDEX: tasks, EXECUTORS_INDEX: {}, PODS_INDEX: {}})
    ledger, told = Ledger(), []
    clock = Clock()
    scheduler = Scheduler(
        hub=hub, store=MemoryRunStore(clock=clock), lifecycle=ledger,  # type: ignore[arg-type]
        plans={}, metrics=Metrics(), clock=clock,
        on_schedule=lambda plan, tick: told.append((plan.name, tick)),
        on_misfire=lambda plan, fired, dropped: None,
        on_gone=lambda plan: told.append((plan.name, "gone")),
    )  # fmt: skip
    monkeypatch.setattr(scheduler._claimer, "_hand_over", lambda item: None)
    yield scheduler, ledger, tasks, told


async def test_a_deleted_task_is_forgotten_by_the_scheduler_and_the_parts_it_tells(
    scene: tuple[Scheduler, Ledger, dict[tuple[str, str], list[TaskView]], list[Any]],
) -> None:
    scheduler, ledger, tasks, told = scene
    tasks[("ns", "a")] = [view("a")]
    tasks[("ns", "b")] = [view("b")]
    scheduler.load()
    # Not mirrored yet: the first ticks' claims wait for the mirror.
    scheduler._now.now += timedelta(seconds=1)  # type: ignore[attr-defined]
    await scheduler.fire_due()
    assert set(scheduler._claimer._deferred) == {TaskUid("uid-a"), TaskUid("uid-b")}

    del tasks[("ns", "a")]
    scheduler._refresh({("ns", "a")})

    assert set(scheduler.plans) == {TaskUid("uid-b")}
    assert set(scheduler._claimer._deferred) == {TaskUid("uid-b")}
    assert scheduler._fire_times.get(TaskUid("uid-a")) is None
    assert len(scheduler._fire_times) == 1
    assert ledger.gone == [TaskUid("uid-a")]
    assert told[-1] == ("a", "gone")
    assert tracked(scheduler._metrics, "plans") == 1


async def test_a_task_created_again_under_its_name_forgets_the_old_one(
    scene: tuple[Scheduler, Ledger, dict[tuple[str, str], list[TaskView]], list[Any]],
) -> None:
    scheduler, ledger, tasks, told = scene
    tasks[("ns", "a")] = [view("a")]
    scheduler.load()
    again = view("a")
    tasks[("ns", "a")] = [TaskView.of("uid-a2", "ns", "a", 1, again.spec)]
    scheduler._refresh({("ns", "a")})
    assert set(scheduler.plans) == {TaskUid("uid-a2")}
    assert ledger.gone == [TaskUid("uid-a")]
    assert ("a", "gone") in told


def test_fire_times_of_tasks_that_went_do_not_pile_up() -> None:
    times = FireTimes()
    far = NOW + timedelta(days=365)
    for round_ in range(20):
        for i in range(100):
            times.set(TaskUid(f"t{round_}-{i}"), far + timedelta(seconds=i))
        for i in range(100):
            times.discard(TaskUid(f"t{round_}-{i}"))
    assert len(times) == 0
    assert times.entries <= keyedheap.SLACK + 1
    assert times.earliest() is None


def test_a_fire_time_set_again_with_another_lead_counts_once() -> None:
    times = FireTimes()
    task, tick = TaskUid("led"), NOW + timedelta(seconds=5)
    times.set(task, tick, timedelta(seconds=1))
    times.set(task, tick, timedelta(seconds=0.25))  # its mode changed: claimed closer to it
    assert times.earliest() == tick - timedelta(seconds=0.25)
    assert times.pop_due(tick - timedelta(seconds=0.5)) is None
    assert times.pop_due(tick) == (tick, task)
    assert times.pop_due(tick + timedelta(days=1)) is None and times.get(task) is None


def test_only_the_latest_fire_time_of_a_task_counts() -> None:
    times = FireTimes()
    task = TaskUid("edited")
    times.set(task, NOW + timedelta(seconds=5))
    for step in range(500):  # edited again and again
        times.set(task, NOW + timedelta(seconds=10 + step))
    assert times.entries <= 2 + keyedheap.SLACK
    assert times.pop_due(NOW + timedelta(seconds=600)) == (NOW + timedelta(seconds=509), task)
    assert times.pop_due(NOW + timedelta(days=1)) is None


# -- the dispatcher -------------------------------------------------------------------------

POD = PodCandidate(
    executor="workers", executor_uid="executor-uid", pod="pod-a", pod_uid="pod-uid",
    ip="127.0.0.9", base_url="http://127.0.0.9:9090", healthy=True, in_flight=0, capacity=10,
    token="dispatch-token",
)  # fmt: skip


class OnePod:
    """The pool: one healthy pod, whatever is asked."""

    def candidates(self, namespace: str, names: Any) -> list[PodCandidate]:
        return [POD]

    def __getattr__(self, name: str) -> Any:
        return lambda *args: None  # note_dispatched, note_finished, ...


class Accepting:
    """A pod that accepts every run once the test lets the answer through."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.answer.set()
        self.received = asyncio.Event()
        self.batches: list[int] = []

    async def send(self, base_url: str, token: str | None, req: DispatchRequest) -> DispatchResult:
        self.received.set()
        await self.answer.wait()
        return DispatchResult(Outcome.ACCEPTED, 202, {"state": "running"}, None, POD.pod)

    async def send_batch(
        self, base_url: str, token: str | None, reqs: list[DispatchRequest]
    ) -> list[DispatchResult]:
        self.batches.append(len(reqs))
        return [await self.send(base_url, token, req) for req in reqs]


class SlowBalance(MemoryRunStore):
    """Balancer state that takes its time to load, as from MySQL under load."""

    def __init__(self) -> None:
        super().__init__()
        self.loading = asyncio.Event()
        self.loaded = asyncio.Event()

    async def balance_state(self, task: TaskUid, strategy: str) -> dict[str, Any]:
        self.loading.set()
        await self.loaded.wait()
        return await super().balance_state(task, strategy)


async def dispatcher_for(
    store: MemoryRunStore, plans: dict[TaskUid, TaskPlan], pod: Accepting, metrics: Metrics
) -> Dispatcher:
    return Dispatcher(
        store=store, epoch=store.epoch, pool=OnePod(), plans=plans,  # type: ignore[arg-type]
        client=pod, callback_base_url="http://127.0.0.1:1",  # type: ignore[arg-type]
        metrics=metrics, lease_valid=lambda: True, rng=random.Random(1),
        clock=lambda: datetime.now(UTC),
    )  # fmt: skip


async def claimed_run(store: MemoryRunStore, plan: TaskPlan) -> Run:
    store.mirror(plan.uid)
    now = datetime.now(UTC)
    new = NewRun(plan.uid, "ns", plan.name, now, Origin.SCHEDULE, RunStatus.CLAIMED, 1)
    (run_id,) = (await store.claim([new])).runs
    assert run_id is not None
    return Run(ExecutionId(run_id), plan.uid, 1, RunStatus.CLAIMED, now, now, "schedule")


async def test_balancer_state_and_outboxes_go_with_the_task_and_the_request() -> None:
    store, pod, metrics = MemoryRunStore(), Accepting(), Metrics()
    plan = plan_of(view("balanced", loadBalanceStrategy="RoundRobin"))
    plans = {plan.uid: plan}
    dispatcher = await dispatcher_for(store, plans, pod, metrics)
    pod.answer.clear()
    sending = asyncio.create_task(dispatcher.attempt(await claimed_run(store, plan), plan, 1))
    await asyncio.wait_for(pod.received.wait(), 10)
    assert len(dispatcher._outboxes) == 1  # in flight: later requests to the pod batch here
    pod.answer.set()
    assert (await sending).how is Sent.RUNNING
    assert dispatcher._outboxes == {}
    assert plan.uid in dispatcher._balance
    assert tracked(metrics, "balance") == 1

    del plans[plan.uid]
    dispatcher.forget(plan.uid)
    assert dispatcher._balance == {}
    assert tracked(metrics, "balance") == 0


async def test_requests_that_come_while_one_is_in_flight_still_go_together() -> None:
    store, pod, metrics = MemoryRunStore(), Accepting(), Metrics()
    plan = plan_of(view("busy", executionMode="Parallel"))
    dispatcher = await dispatcher_for(store, {plan.uid: plan}, pod, metrics)
    pod.answer.clear()
    runs = [await claimed_run(store, plan) for _ in range(3)]
    first = asyncio.create_task(dispatcher.attempt(runs[0], plan, 1))
    await asyncio.wait_for(pod.received.wait(), 10)
    later = [asyncio.create_task(dispatcher.attempt(run, plan, 1)) for run in runs[1:]]
    await asyncio.sleep(0.05)
    pod.answer.set()
    await asyncio.gather(first, *later)
    assert pod.batches == [2]
    assert dispatcher._outboxes == {}


async def test_a_dispatch_in_flight_when_the_task_goes_does_not_keep_its_state() -> None:
    store, pod, metrics = SlowBalance(), Accepting(), Metrics()
    plan = plan_of(view("racing", loadBalanceStrategy="RoundRobin"))
    plans = {plan.uid: plan}
    dispatcher = await dispatcher_for(store, plans, pod, metrics)
    sending = asyncio.create_task(dispatcher.attempt(await claimed_run(store, plan), plan, 1))
    await asyncio.wait_for(store.loading.wait(), 10)
    del plans[plan.uid]  # the scheduler forgets the Task while its state loads
    dispatcher.forget(plan.uid)
    store.loaded.set()
    await sending
    assert dispatcher._balance == {}


async def test_a_changed_strategy_replaces_the_state_kept_for_the_old_one() -> None:
    store, pod, metrics = MemoryRunStore(), Accepting(), Metrics()
    first = plan_of(view("switching", loadBalanceStrategy="RoundRobin"))
    plans = {first.uid: first}
    dispatcher = await dispatcher_for(store, plans, pod, metrics)
    await dispatcher.attempt(await claimed_run(store, first), first, 1)
    second = plan_of(view("switching", loadBalanceStrategy="Sticky"))
    plans[second.uid] = second
    await dispatcher.attempt(await claimed_run(store, second), second, 1)
    assert list(dispatcher._balance) == [second.uid]
    assert dispatcher._balance[second.uid][0] is second.strategy

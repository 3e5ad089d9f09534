"""The scheduler over the in-memory store, with an injected clock: each tick is claimed once,
in batches, never retroactively; claims of Tasks the mirror has not written yet wait; a mode
decides what a tick does."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cadenza.core.ids import ExecutionId, TaskUid
from cadenza.core.transitions import RunStatus
from cadenza.kube.hub import EXECUTORS_INDEX, PODS_INDEX, TASKS_INDEX, Hub
from cadenza.kube.views import TaskView
from cadenza.metrics import Metrics
from cadenza.scheduling.claimer import Claimer
from cadenza.scheduling.claims import Claim
from cadenza.scheduling.plans import TaskPlan, plan_of
from cadenza.scheduling.scheduler import LOOKAHEAD_SECONDS, Scheduler
from cadenza.store.executions import Origin
from cadenza.store.memory import MemoryRunStore

START = datetime(2026, 12, 2, 12, 0, 0, 500000, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Runs:
    """What the scheduler hands over: the run half of the leader, reduced to a ledger."""

    started: list[tuple[ExecutionId, TaskUid, datetime | None, RunStatus]] = field(
        default_factory=list
    )
    skipped: list[ExecutionId] = field(default_factory=list)
    active: dict[TaskUid, int] = field(default_factory=dict)
    gone: list[TaskUid] = field(default_factory=list)

    def in_flight(self, task: TaskUid) -> int:
        return self.active.get(task, 0)

    def queued(self, task: TaskUid) -> int:
        return sum(1 for _, t, _, s in self.started if t == task and s is RunStatus.QUEUED)

    def claimed(
        self,
        run: ExecutionId,
        task: TaskUid,
        tick: datetime | None,
        origin: str,
        status: RunStatus,
        requested_at: datetime,
    ) -> None:
        self.started.append((run, task, tick, status))
        if status is RunStatus.CLAIMED:
            self.active[task] = self.active.get(task, 0) + 1

    def skip(self, task: TaskUid, run: ExecutionId) -> None:
        self.skipped.append(run)

    def task_gone(self, task: TaskUid) -> None:
        self.gone.append(task)


def task(name: str, schedule: str = "* * * * * *", **spec: Any) -> TaskView:
    body = {"schedule": schedule, "executors": [{"name": "workers"}], **spec}
    return TaskView.of(f"uid-{name}", "ns", name, 1, body)


@dataclass
class Scene:
    clock: Clock
    store: MemoryRunStore
    runs: Runs
    hub: Hub
    scheduler: Scheduler
    tasks: dict[tuple[str, str], list[TaskView]]

    def apply(self, view: TaskView) -> None:
        self.tasks[(view.namespace, view.name)] = [view]

    async def fire(self, seconds: float) -> None:
        """Let the clock run ``seconds``, claiming what falls due, as the loop would."""
        for _ in range(int(seconds * 4)):
            self.clock.advance(0.25)
            await self.scheduler.fire_due()

    def ticks(self, name: str) -> list[datetime]:
        uid = TaskUid(f"uid-{name}")
        return sorted(
            row.scheduled_at
            for row in self.store.runs.values()
            if row.task_uid == uid and row.scheduled_at is not None
        )


@pytest.fixture
def scene(monkeypatch: pytest.MonkeyPatch) -> Iterator[Scene]:
    yield from _scene(monkeypatch)


@pytest.fixture
def early_scene(monkeypatch: pytest.MonkeyPatch) -> Iterator[Scene]:
    """Parallel Tasks without ``maxConcurrent`` claimed a second ahead, as the leader does."""
    yield from _scene(monkeypatch, claim_ahead=1.0)


@pytest.fixture
def wave_scene(monkeypatch: pytest.MonkeyPatch) -> Iterator[Scene]:
    """Crowded ticks of Parallel Tasks claimed in waves up to 2 s ahead."""
    yield from _scene(monkeypatch, claim_ahead_max=2.0)


def _scene(
    monkeypatch: pytest.MonkeyPatch,
    claim_ahead: float = LOOKAHEAD_SECONDS,
    claim_ahead_max: float = LOOKAHEAD_SECONDS,
) -> Iterator[Scene]:
    clock = Clock(START)
    store = MemoryRunStore(clock=clock)
    tasks: dict[tuple[str, str], list[TaskView]] = {}
    hub = Hub(indexes={TASKS_INDEX: tasks, EXECUTORS_INDEX: {}, PODS_INDEX: {}})
    runs = Runs()
    runs.skipped = []
    plans: dict[TaskUid, TaskPlan] = {}
    scheduler = Scheduler(
        hub=hub,
        store=store,
        lifecycle=runs,  # type: ignore[arg-type]
        plans=plans,
        metrics=Metrics(),
        on_schedule=lambda plan, tick: None,
        on_misfire=lambda plan, fired, dropped: None,
        on_gone=lambda plan: None,
        claim_ahead=claim_ahead,
        claim_ahead_max=claim_ahead_max,
        clock=clock,
    )
    # Hand-over happens at the tick on the real loop; here it happens at once.
    monkeypatch.setattr(scheduler._claimer, "_hand_over", lambda item: _hand_over(runs, item))
    yield Scene(clock, store, runs, hub, scheduler, tasks)


def _hand_over(runs: Runs, item: Any) -> None:
    if item.status is RunStatus.SKIPPED:
        runs.skip(item.claim.plan.uid, item.run)
        return
    claim = item.claim
    runs.claimed(item.run, claim.plan.uid, claim.tick, claim.origin.value, item.status, START)


async def test_every_second_each_tick_once(scene: Scene) -> None:
    scene.apply(task("a"))
    scene.store.mirror(TaskUid("uid-a"))
    scene.scheduler.load()
    await scene.fire(5)
    ticks = scene.ticks("a")
    assert ticks == [START.replace(microsecond=0) + timedelta(seconds=s) for s in range(1, 6)]
    # Asking again changes nothing: every tick is claimed already.
    await scene.scheduler.fire_due()
    assert scene.ticks("a") == ticks


async def test_a_new_task_never_fires_retroactively(scene: Scene) -> None:
    scene.apply(task("late", "0 0 * * * *"))  # hourly, at minute 0
    scene.store.mirror(TaskUid("uid-late"))
    scene.scheduler.load()
    await scene.fire(3)
    assert scene.ticks("late") == []


async def test_claims_wait_for_the_mirror(scene: Scene) -> None:
    scene.apply(task("b"))
    scene.scheduler.load()
    await scene.fire(1)
    assert scene.ticks("b") == []
    scene.store.mirror(TaskUid("uid-b"))
    scene.scheduler.mirrored([TaskUid("uid-b")])  # as the mirror loop tells it
    await scene.fire(1)
    # The tick that waited is claimed once the row exists, with the next one.
    assert len(scene.ticks("b")) == 2


async def test_waiting_claims_are_not_asked_for_again_and_again(scene: Scene) -> None:
    scene.apply(task("c"))
    scene.scheduler.load()
    asked: list[int] = []
    claim = scene.store.claim

    async def counting(runs: Any) -> Any:
        asked.append(len(runs))
        return await claim(runs)

    scene.store.claim = counting  # type: ignore[method-assign]
    await scene.fire(1.5)
    # Each tick asked once; the one waiting was not asked again on every loop.
    assert asked == [1, 1]
    # Without word from the mirror (its write landed while the claim was in flight), the
    # waiting claims are tried again within DEFER_SECONDS.
    scene.store.mirror(TaskUid("uid-c"))
    await scene.fire(2)
    assert len(scene.ticks("c")) == 4


async def test_skip_mode_skips_a_tick_while_a_run_is_active(scene: Scene) -> None:
    scene.apply(task("s", executionMode="Skip"))
    scene.store.mirror(TaskUid("uid-s"))
    scene.scheduler.load()
    await scene.fire(3)
    statuses = [row.status for row in scene.store.runs.values()]
    assert statuses == [RunStatus.CLAIMED, RunStatus.SKIPPED, RunStatus.SKIPPED]
    assert len(scene.runs.skipped) == 2


async def test_sequential_mode_queues_behind_the_active_run(scene: Scene) -> None:
    scene.apply(task("q", executionMode="Sequential"))
    scene.store.mirror(TaskUid("uid-q"))
    scene.scheduler.load()
    await scene.fire(3)
    statuses = [row.status for row in scene.store.runs.values()]
    assert statuses == [RunStatus.CLAIMED, RunStatus.QUEUED, RunStatus.QUEUED]


async def test_many_tasks_due_together_are_claimed_in_one_batch(scene: Scene) -> None:
    for i in range(50):
        scene.apply(task(f"t{i}"))
        scene.store.mirror(TaskUid(f"uid-t{i}"))
    scene.scheduler.load()
    batches: list[int] = []
    claim = scene.store.claim

    async def counting(runs: Any) -> Any:
        batches.append(len(runs))
        return await claim(runs)

    scene.store.claim = counting  # type: ignore[method-assign]
    await scene.fire(2)
    assert batches == [50, 50]


def replaced(view: TaskView, uid: str | None = None, **spec: Any) -> TaskView:
    body = {**view.spec, **spec}
    return TaskView.of(uid or view.uid, view.namespace, view.name, view.generation + 1, body)


async def test_only_the_tasks_named_by_changes_are_read_again(scene: Scene) -> None:
    """The watch tells which Tasks changed; the others are not looked at (with 10,000 Tasks,
    re-reading all of them on every event kept the leader from claiming on time)."""
    for name in ("a", "b"):
        scene.apply(task(name))
        scene.store.mirror(TaskUid(f"uid-{name}"))
    scene.scheduler.load()
    # "b" changes in the index, but only "a" is named: "b" keeps its plan until it is named.
    scene.apply(replaced(scene.tasks[("ns", "a")][0], schedule="*/2 * * * * *"))
    scene.apply(replaced(scene.tasks[("ns", "b")][0], schedule="*/3 * * * * *"))
    scene.scheduler._refresh({("ns", "a")})
    plans = scene.scheduler.plans
    assert plans[TaskUid("uid-a")].spec_hash == scene.tasks[("ns", "a")][0].spec_hash
    assert plans[TaskUid("uid-b")].spec_hash == task("b").spec_hash
    scene.scheduler._refresh({("ns", "b")})
    assert plans[TaskUid("uid-b")].spec_hash == scene.tasks[("ns", "b")][0].spec_hash


async def test_a_task_deleted_or_created_again_under_its_name_is_followed(scene: Scene) -> None:
    scene.apply(task("a"))
    scene.apply(task("b"))
    for uid in ("uid-a", "uid-b", "uid-a2"):
        scene.store.mirror(TaskUid(uid))
    scene.scheduler.load()
    # Deleted: its plan goes and it fires no more.
    del scene.tasks[("ns", "b")]
    # Deleted and created again under the same name while the leader looked away: a new uid.
    scene.apply(replaced(scene.tasks[("ns", "a")][0], uid="uid-a2"))
    scene.scheduler._refresh({("ns", "a"), ("ns", "b")})
    assert set(scene.scheduler.plans) == {TaskUid("uid-a2")}
    await scene.fire(3)
    assert scene.ticks("b") == []
    # The Task now under the name fires as itself; its predecessor's plan fires nothing.
    assert scene.ticks("a") == []
    assert len(scene.ticks("a2")) == 3
    assert {row.task_uid for row in scene.store.runs.values()} == {TaskUid("uid-a2")}


async def test_a_parallel_task_is_claimed_its_lead_ahead_and_the_other_modes_close_to_the_tick(
    early_scene: Scene,
) -> None:
    scene = early_scene
    for view in (task("par"), task("capped", maxConcurrent=2), task("skip", executionMode="Skip")):
        scene.apply(view)
        scene.store.mirror(TaskUid(view.uid))
    scene.scheduler.load()
    first = START.replace(microsecond=0) + timedelta(seconds=1)
    await scene.scheduler.fire_due()  # half a second before the first tick
    assert scene.ticks("par") == [first]
    assert scene.ticks("capped") == scene.ticks("skip") == []
    await scene.fire(0.25)  # a quarter of a second before it
    assert scene.ticks("capped") == scene.ticks("skip") == [first]
    assert scene.ticks("par") == [first]
    await scene.fire(0.25)  # at the tick: the Parallel Task's next one is claimed now
    assert scene.ticks("par") == [first, first + timedelta(seconds=1)]
    # Every tick once, the Parallel Task's always a second ahead.
    await scene.fire(3)
    assert scene.ticks("par") == [first + timedelta(seconds=s) for s in range(5)]
    assert scene.ticks("skip") == [first + timedelta(seconds=s) for s in range(4)]


async def test_a_task_whose_mode_changes_is_claimed_by_its_new_lead(early_scene: Scene) -> None:
    scene = early_scene
    scene.apply(task("m", executionMode="Skip"))
    scene.store.mirror(TaskUid("uid-m"))
    scene.scheduler.load()
    await scene.scheduler.fire_due()
    assert scene.ticks("m") == []
    scene.apply(task("m"))  # Parallel now: its tick is due for claiming already
    scene.scheduler._refresh({("ns", "m")})
    await scene.scheduler.fire_due()
    assert scene.ticks("m") == [START.replace(microsecond=0) + timedelta(seconds=1)]


async def test_a_crowded_tick_is_claimed_in_waves_ahead_of_it(wave_scene: Scene) -> None:
    scene = wave_scene
    crowd = [task(f"p{i}", "0 * * * * *") for i in range(1600)]  # 1,600 due at second 0
    for view in [*crowd, task("capped", "0 * * * * *", maxConcurrent=1)]:
        scene.apply(view)
        scene.store.mirror(TaskUid(view.uid))
    scene.scheduler.load()
    tick = START.replace(second=0, microsecond=0) + timedelta(minutes=1)

    def claimed(at: datetime) -> int:
        rows = scene.store.runs.values()
        return sum(1 for row in rows if row.scheduled_at == at and row.task_uid != "uid-capped")

    scene.clock.now = tick - timedelta(seconds=2.5)
    await scene.scheduler.fire_due()
    assert claimed(tick) == 0
    # A thousand a second before their usual lead, and each further 250 a quarter of a second
    # earlier than the ones before: the last 100 are claimed 2 s ahead of the tick (the longest).
    seen = []
    for _ in range(5):
        scene.clock.advance(0.25)
        await scene.scheduler.fire_due()
        seen.append(claimed(tick))
    assert seen == [0, 100, 350, 600, 1600]
    assert scene.ticks("capped") == []
    scene.clock.now = tick - timedelta(seconds=0.25)
    await scene.scheduler.fire_due()
    assert scene.ticks("capped") == [tick]  # a Task with a cap on its runs: its usual lead
    # Each once; the next minute's tick is crowded again, and claimed in the same waves.
    await scene.fire(0.5)
    assert len(scene.store.runs) == 1601
    scene.clock.now = tick + timedelta(seconds=60 - 2)
    await scene.scheduler.fire_due()
    assert claimed(tick + timedelta(minutes=1)) == 100


class Sends:
    """The lifecycle as the claimer asks it: whether a Task's pods hold runs until their tick."""

    def __init__(self, ahead: bool) -> None:
        self.ahead = ahead

    def sends_ahead(self, task: TaskUid) -> bool:
        return self.ahead


def timing(
    before_tick: float, *, ahead: bool = True, lead: float = 1.0, send_ahead: float | None = 0.4
) -> tuple[float, float | None]:
    """Seconds until a run claimed ``before_tick`` seconds ahead of its tick is handed over,
    and until it is sent when that is later."""
    claimer = Claimer(
        store=MemoryRunStore(),
        lifecycle=Sends(ahead),  # type: ignore[arg-type]
        metrics=Metrics(),
        clock=lambda: START,
        lead=lead,
        send_ahead=send_ahead,
    )
    tick = START + timedelta(seconds=before_tick)
    delay, send_at = claimer.timing(Claim(plan_of(task("h")), tick, Origin.SCHEDULE), START)
    return delay, None if send_at is None else (send_at - START).total_seconds()


def test_a_run_claimed_ahead_is_recorded_at_once_and_sent_its_send_lead_before_the_tick() -> None:
    # Claimed at its lead (1 s): handed over (recorded) now, sent 0.4 s before the tick, 0.6 s
    # from now; the claim and its record are off the path of the sends.
    assert timing(1.0) == (0.0, pytest.approx(0.6))
    # Claimed late: sent 0.4 s ahead all the same, or at once when that is past.
    assert timing(0.7) == (0.0, pytest.approx(0.3))
    assert timing(0.3) == (0.0, None)
    # Claimed in an earlier wave of a crowded tick: held as long, sent as much earlier.
    assert timing(3.0) == (0.0, pytest.approx(0.6))
    # A send lead as long as the claim's, or none set: sent as soon as it is recorded.
    assert timing(1.0, send_ahead=1.0) == (0.0, None)
    assert timing(1.0, send_ahead=None) == (0.0, None)
    # Pods that do not hold runs get it at its tick, whatever the send lead.
    assert timing(1.0, ahead=False) == (pytest.approx(1.0), None)

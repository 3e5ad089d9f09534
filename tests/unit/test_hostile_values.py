"""Hostile values stay with the object that holds them (issue 9, item 7).

Each case below crashed something shared before it was bounded or guarded: a Task's plan that
raised in the leader's scheduler (every leader in turn stepped down on meeting it), a pod whose
annotation made kopf's indexer drop it (so no new replica ever became ready), an Executor whose
spec or selector raised in the pool or the mirror. Now each is refused with an error naming its
field, or read as harmless, and the engine's own guards keep the other Tasks ticking when a plan
fails anyway.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes
import pytest

from cadenza import cli
from cadenza.core import fields, schedule, taskspec
from cadenza.core.ids import TaskUid
from cadenza.kube import conditions
from cadenza.kube.hub import EXECUTORS_INDEX, PODS_INDEX, TASKS_INDEX, Hub
from cadenza.kube.views import ExecutorView, PodView, TaskView
from cadenza.metrics import Metrics
from cadenza.mirror_snapshot import snapshot
from cadenza.scheduling.plans import TaskPlan, plan_of, retry_policy
from cadenza.scheduling.scheduler import Scheduler
from cadenza.scheduling.status import TaskStatusBook
from cadenza.store.memory import MemoryRunStore

NOW = datetime(2026, 12, 2, 12, 0, 0, 500000, tzinfo=UTC)


@pytest.fixture(autouse=True)
def operator_recursion_limit() -> Iterator[None]:
    """As ``cadenza operator`` sets it: JSON as deep as the API server stores is hashable."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(cli.RECURSION_LIMIT)
    yield
    sys.setrecursionlimit(before)


GOOD = {"schedule": "* * * * * *", "executors": [{"name": "pool"}]}


def view(name: str, **spec: Any) -> TaskView:
    body = {**GOOD, **spec}
    return TaskView.of(f"uid-{name}", "ns", name, 1, body)


# -- Task specs: refused, naming the field, where plan_of or the scheduler raised ------------


def nested(depth: int) -> Any:
    value: Any = {"leaf": 1}
    for _ in range(depth - 1):
        value = [value]
    return value


# (spec fields, the field the refusal names). Before the fix each of these made plan_of, or the
# scheduler's first fire-time computation, raise inside the leader's task group.
HOSTILE_SPECS: dict[str, tuple[dict[str, Any], str]] = {
    # Schema-shaped; the parser took them, then Schedule.next_fire raised OverflowError.
    "every-beyond-a-timedelta": ({"schedule": "@every 9999999999999h"}, "spec.schedule"),
    "every-beyond-year-9999": ({"schedule": "@every 87600000h"}, "spec.schedule"),
    # int64 in the schema; `now - timedelta(seconds=deadline)` raised OverflowError at takeover.
    "deadline-beyond-a-timedelta": (
        {"startingDeadlineSeconds": 2**62},
        "spec.startingDeadlineSeconds",
    ),
    "deadline-beyond-year-1": (
        {"startingDeadlineSeconds": 10**11},
        "spec.startingDeadlineSeconds",
    ),
    # int64 in the schema: `INTERVAL 9223372036854775807 SECOND` is NULL in MariaDB.
    "history-age-of-ages": (
        {"history": {"maxAgeSeconds": 2**63 - 1}},
        "spec.history.maxAgeSeconds",
    ),
    # Refused by the schema today, but stored objects may predate a bound, and each raised
    # ValueError or KeyError in plan_of.
    "max-attempts-zero": ({"retry": {"maxAttempts": 0}}, "spec.retry.maxAttempts"),
    "jitter-over-100": ({"retry": {"jitterPercent": 150}}, "spec.retry.jitterPercent"),
    "negative-backoff": ({"retry": {"backoffSeconds": -5}}, "spec.retry.backoffSeconds"),
    "unknown-mode": ({"executionMode": "Serial"}, "spec.executionMode"),
    "unknown-strategy": ({"loadBalanceStrategy": "round_robin"}, "spec.loadBalanceStrategy"),
    "unknown-misfire-policy": ({"misfirePolicy": "Always"}, "spec.misfirePolicy"),
    "executor-without-name": ({"executors": [{"weight": 1}]}, "spec.executors[0].name"),
    "weight-as-text": ({"executors": [{"name": "a", "weight": "x"}]}, "spec.executors[0].weight"),
    "timeout-as-text": ({"timeoutSeconds": "abc"}, "spec.timeoutSeconds"),
    "timeout-of-ages": ({"timeoutSeconds": 10**400}, "spec.timeoutSeconds"),
    "executors-not-a-list": ({"executors": "pool"}, "spec.executors"),
    "retry-not-an-object": ({"retry": [1, 2]}, "spec.retry"),
    "history-not-an-object": ({"history": "forever"}, "spec.history"),
    # Schema-valid: the mirror's INSERT broke MariaDB's 32-level JSON limit and failed the
    # transaction that writes every Task.
    "payload-31-levels-deep": ({"payload": nested(31)}, "spec.payload"),
    "payload-5000-levels-deep": ({"payload": nested(5000)}, "spec.payload"),
    # The CRD's CEL rule: all weights zero places no run.
    "weights-all-zero": ({"executors": [{"name": "a", "weight": 0}]}, "spec.executors"),
}


@pytest.mark.parametrize(("spec", "field"), HOSTILE_SPECS.values(), ids=HOSTILE_SPECS.keys())
def test_a_hostile_spec_is_refused_naming_its_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(fields.FieldError) as refused:
        taskspec.parse_task_spec({**GOOD, **spec})
    assert refused.value.field == field
    assert str(refused.value).startswith(f"{field}: ")


@pytest.mark.parametrize(("spec", "field"), HOSTILE_SPECS.values(), ids=HOSTILE_SPECS.keys())
def test_its_plan_is_never_ticked_and_holds_only_computable_values(
    spec: dict[str, Any], field: str
) -> None:
    plan = plan_of(view("hostile", **spec))
    assert plan.schedule is None
    assert field in (plan.problem or "")
    # What the engine computes from any plan, ticked or not, cannot fail.
    now = datetime.now(UTC)
    assert now + timedelta(seconds=plan.timeout_seconds) > now
    window = plan.starting_deadline_seconds or 3600
    assert now - timedelta(seconds=window) < now
    assert now - timedelta(seconds=plan.history_max_age_seconds) < now
    assert 1 <= plan.retry.max_attempts <= 100


def test_the_callbacks_retry_policy_never_raises_on_a_stored_spec() -> None:
    for spec, _ in HOSTILE_SPECS.values():
        assert retry_policy({**GOOD, **spec}).max_attempts >= 1
    assert retry_policy({"retry": {"maxAttempts": 3}}).max_attempts == 3


def test_a_payload_up_to_20_levels_deep_is_kept() -> None:
    parsed = taskspec.parse_task_spec({**GOOD, "payload": nested(20)})
    assert parsed.payload == nested(20)
    assert taskspec.parse_task_spec({**GOOD, "payload": "text"}).payload == "text"


def test_a_schedule_that_never_fires_is_refused_by_the_engines_parser() -> None:
    with pytest.raises(fields.FieldError, match=r"^spec\.schedule: .*never occurs in FEB"):
        taskspec.parse_task_spec({**GOOD, "schedule": "0 0 31 2 *"})


def test_every_up_to_366_days_is_accepted_and_computes() -> None:
    longest = schedule.parse_schedule("@every 8784h")
    tick = longest.next_fire(NOW)
    assert longest.next_fire(tick) - tick == timedelta(days=366)
    with pytest.raises(schedule.ScheduleError, match="maximum interval of 8784h"):
        schedule.parse_schedule("@every 8784h1s")


def test_every_takes_ascii_digits_only() -> None:
    with pytest.raises(schedule.ScheduleError):
        schedule.parse_schedule("@every \u0661\u0662s")  # Arabic-Indic 1, 2


# -- pods: annotations and labels never drop a pod from the index -----------------------------


def pod(annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> PodView:
    meta: dict[str, Any] = {"uid": "u", "namespace": "n", "name": "p"}
    if annotations is not None:
        meta["annotations"] = annotations
    if labels is not None:
        meta["labels"] = labels
    return PodView.from_body({"metadata": meta, "status": {"phase": "Running"}})


@pytest.mark.parametrize(
    "weight",
    # "²" passes str.isdigit and int() refuses it; 5000 digits pass isdigit and int() refuses
    # them too (Python's 4300-digit limit): both raised ValueError in the pod indexer.
    ["²", "9" * 5000, "abc", "-1", "1e400", "NaN", "1001", "", " ", "1.5", "٣", "0x10", "\x00"],
)
def test_a_garbage_weight_annotation_reads_as_none_and_says_why(weight: str) -> None:
    view_ = pod({"cadenza.dev/weight": weight})
    assert view_.weight is None
    assert view_.weight_error is not None
    assert view_.weight_error.startswith("metadata.annotations[cadenza.dev/weight]: ")


def test_a_good_weight_annotation_is_read() -> None:
    assert (pod({"cadenza.dev/weight": " 7 "}).weight, pod({}).weight) == (7, None)
    assert pod({"cadenza.dev/weight": "1000"}).weight == 1000
    assert pod({"cadenza.dev/weight": "0"}).weight_error is None


# -- Executors ----------------------------------------------------------------------------------


def test_an_executor_spec_of_the_wrong_types_is_read_with_defaults_and_problems() -> None:
    from cadenza.executors.spec import read_spec

    spec, problems = read_spec(
        {"port": "abc", "scheme": "gopher", "healthCheck": {"path": "/a b", "periodSeconds": 0}}
    )
    assert (spec.port, spec.scheme, spec.health_check.path) == (9090, "http", "/healthz")
    for selector in ({"matchExpressions": [{"key": ["a"], "operator": "In"}]}, "app=w", {}):
        assert [p.field for p in read_spec({"selector": selector})[1]] == ["spec.selector"]
    assert [p.field for p in problems] == [
        "spec.healthCheck.periodSeconds",
        "spec.port",
        "spec.scheme",
        "spec.healthCheck.path",
        "spec.selector",
    ]


def hub_of(tasks: list[TaskView], executors: list[ExecutorView], pods: list[PodView]) -> Hub:
    return Hub(
        indexes={
            TASKS_INDEX: {(t.namespace, t.name): [t] for t in tasks},
            EXECUTORS_INDEX: {(e.namespace, e.name): [e] for e in executors},
            PODS_INDEX: {"ns": pods},
        }
    )


def test_the_mirror_keeps_writing_the_others_beside_hostile_objects() -> None:
    # An unknown selector operator raised ValueError in the mirror's snapshot (every resync).
    odd = ExecutorView.from_body({
        "metadata": {"uid": "e1", "namespace": "ns", "name": "odd"},
        "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]},
                 "port": 10**12, "scheme": "x" * 50},
    })  # fmt: skip
    pool = ExecutorView.from_body({
        "metadata": {"uid": "e2", "namespace": "ns", "name": "pool"},
        "spec": {"selector": {"matchLabels": {"app": "w"}}},
    })  # fmt: skip
    worker = PodView.from_body({
        "metadata": {"uid": "p1", "namespace": "ns", "name": "w", "labels": {"app": "w"},
                     "annotations": {"cadenza.dev/weight": "²"}},
        "status": {"phase": "Running"},
    })  # fmt: skip
    hostile = view("hostile", schedule="@every 9999999999999h", timeoutSeconds=10**20,
                   handler="h" * 1000, executionMode="x" * 100)  # fmt: skip
    snap = snapshot(hub_of([view("good"), hostile], [odd, pool], [worker]))

    rows = {row.name: row for row in snap.tasks}
    assert rows["good"].valid and rows["good"].invalid_reason is None
    bad = rows["hostile"]
    assert not bad.valid and bad.invalid_reason is not None
    # Every column holds a value within its bounds: the transaction cannot fail on this row.
    assert (bad.timeout_seconds, bad.handler, bad.execution_mode) == (300, "default", "Parallel")
    assert [e.port for e in snap.executors] == [9090, 9090]
    assert [e.scheme for e in snap.executors] == ["http", "http"]
    assert {uid: [i.pod_name for i in rows_] for uid, rows_ in snap.instances.items()} == {
        "e1": [],
        "e2": ["w"],
    }
    deep = {
        row.name: row for row in snapshot(hub_of([view("deep", payload=nested(40))], [], [])).tasks
    }
    assert "payload" not in deep["deep"].spec and not deep["deep"].valid
    assert rows["good"].spec == GOOD
    ready = {c.type: c for c in snap.task_conditions[TaskUid("uid-hostile")].conditions}["Ready"]
    assert (ready.status, ready.reason) == ("False", "InvalidSpec")
    for path in ("spec.schedule", "spec.timeoutSeconds", "spec.handler", "spec.executionMode"):
        assert path in ready.message


# -- the scheduler's own guard: one plan that cannot compute never stops the others ----------


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class Ledger:
    """The run half of the leader, reduced to what the scheduler asks and hands over."""

    def in_flight(self, task: TaskUid) -> int:
        return 0

    def queued(self, task: TaskUid) -> int:
        return 0

    def sends_ahead(self, task: TaskUid) -> bool:
        return False

    def task_gone(self, task: TaskUid) -> None:
        pass

    def task_suspended(self, task: TaskUid) -> None:
        pass


@pytest.fixture
def told() -> dict[str, list[tuple[TaskPlan, datetime | None]]]:
    return {}


@pytest.fixture
def scheduler(
    monkeypatch: pytest.MonkeyPatch, told: dict[str, list[tuple[TaskPlan, datetime | None]]]
) -> Iterator[tuple[Scheduler, MemoryRunStore, Clock, dict[tuple[str, str], list[TaskView]]]]:
    clock = Clock()
    store = MemoryRunStore(clock=clock)
    tasks: dict[tuple[str, str], list[TaskView]] = {}
    hub = Hub(indexes={TASKS_INDEX: tasks, EXECUTORS_INDEX: {}, PODS_INDEX: {}})
    plans: dict[TaskUid, TaskPlan] = {}
    scheduler = Scheduler(
        hub=hub, store=store, lifecycle=Ledger(),  # type: ignore[arg-type]
        plans=plans, metrics=Metrics(),
        on_schedule=lambda plan, tick: told.setdefault(plan.name, []).append((plan, tick)),
        on_misfire=lambda plan, fired, dropped: None, on_gone=lambda plan: None, clock=clock,
    )  # fmt: skip
    monkeypatch.setattr(scheduler._claimer, "_hand_over", lambda item: None)
    yield scheduler, store, clock, tasks


def ticks(store: MemoryRunStore, name: str) -> list[datetime]:
    uid = TaskUid(f"uid-{name}")
    return sorted(
        r.scheduled_at for r in store.runs.values() if r.task_uid == uid and r.scheduled_at
    )


async def test_a_schedule_that_raises_is_taken_off_alone_and_reported(
    monkeypatch: pytest.MonkeyPatch,
    scheduler: tuple[Scheduler, MemoryRunStore, Clock, dict[tuple[str, str], list[TaskView]]],
    told: dict[str, list[tuple[TaskPlan, datetime | None]]],
) -> None:
    """Whatever the parser lets through, an engine fault in one Task's fire times (here forced
    after its first tick) costs that Task its schedule, not the leader its task group."""
    sched, store, clock, tasks = scheduler
    real = schedule.Schedule.next_fire
    calls = {"broken": 0}

    def next_fire(self: schedule.Schedule, after: datetime) -> datetime:
        if self.expression == "*/1 * * * * *":
            calls["broken"] += 1
            if calls["broken"] > 1:
                raise OverflowError("date value out of range")
        return real(self, after)

    monkeypatch.setattr(schedule.Schedule, "next_fire", next_fire)
    for task in (view("good"), view("broken", schedule="*/1 * * * * *")):
        tasks[("ns", task.name)] = [task]
        store.mirror(TaskUid(task.uid))
    sched.load()
    for _ in range(12):
        clock.now += timedelta(seconds=0.25)
        await sched.fire_due()
    # The good Task fired every second; the broken one fired its first tick, then stopped.
    second = timedelta(seconds=1)
    assert ticks(store, "good") == [NOW.replace(microsecond=0) + n * second for n in (1, 2, 3)]
    assert ticks(store, "broken") == [NOW.replace(microsecond=0) + second]
    plan, tick = told["broken"][-1]
    assert tick is None and plan.schedule is None
    assert plan.problem is not None and plan.problem.startswith("spec.schedule: no fire time")
    assert sched.plans[TaskUid("uid-broken")].schedule is None
    # Still runnable: a manual trigger needs no schedule.
    assert plan.runnable


async def test_plan_of_raising_leaves_the_other_tasks_planned(
    monkeypatch: pytest.MonkeyPatch,
    scheduler: tuple[Scheduler, MemoryRunStore, Clock, dict[tuple[str, str], list[TaskView]]],
) -> None:
    import cadenza.scheduling.scheduler as module

    sched, store, clock, tasks = scheduler
    real = module.plan_of

    def plan_of_(task: TaskView) -> TaskPlan:
        if task.name == "cursed":
            raise RuntimeError("a bug")
        return real(task)

    monkeypatch.setattr(module, "plan_of", plan_of_)
    for task in (view("cursed"), view("good")):
        tasks[("ns", task.name)] = [task]
        store.mirror(TaskUid(task.uid))
    sched.load()
    assert set(sched.plans) == {TaskUid("uid-good")}
    clock.now += timedelta(seconds=1)
    await sched.fire_due()
    assert len(ticks(store, "good")) == 1


def test_a_trigger_of_a_task_whose_run_could_not_be_made_is_not_fired(
    scheduler: tuple[Scheduler, MemoryRunStore, Clock, dict[tuple[str, str], list[TaskView]]],
) -> None:
    sched, _, _, tasks = scheduler
    body = {**GOOD, "timeoutSeconds": 10**12}
    bad = TaskView.of("uid-bad", "ns", "bad", 1, body, trigger="now")
    body = {**GOOD, "schedule": "61 * * * *"}
    unscheduled = TaskView.of("uid-unscheduled", "ns", "unscheduled", 1, body, trigger="now")
    tasks[("ns", "bad")], tasks[("ns", "unscheduled")] = [bad], [unscheduled]
    sched.load()
    # Only the Task whose problem lies in when it fires is fired by hand (as before).
    assert [c.plan.name for c in sched._loaded or []] == ["unscheduled"]


# -- the status book: Ready=False and a Warning event for what the engine found -------------


def test_an_engine_fault_turns_ready_false_with_a_warning() -> None:
    book = TaskStatusBook(kubernetes.client.ApiClient(), None, Metrics())  # type: ignore[arg-type]
    plan = plan_of(view("broken")).unscheduled("spec.schedule", "no fire time could be computed")
    # The mirror sees nothing wrong with the spec; the engine's finding stands in for its Ready.
    book.conditions(plan.uid, "ns", "broken", 1, conditions.for_task(1, (), []))
    book.schedule(plan, None)
    entry = book._entries[plan.uid]
    written = {c["type"]: c for c in entry.render_conditions()}
    assert (written["Ready"]["status"], written["Ready"]["reason"]) == ("False", "InvalidSchedule")
    assert written["Ready"]["message"].startswith("spec.schedule: no fire time")
    assert (written["Scheduled"]["status"], written["Scheduled"]["reason"]) == (
        "False",
        "InvalidSchedule",
    )
    assert [(kind, reason) for kind, reason, _ in entry.pending_events] == [
        ("Warning", "InvalidSchedule")
    ]
    # A fixed spec (a new plan that computes) clears it.
    book.schedule(plan_of(view("broken")), NOW)
    written = {c["type"]: c for c in entry.render_conditions()}
    assert (written["Ready"]["status"], written["Scheduled"]["status"]) == ("True", "True")


# -- the admission webhook reads with the engine's reader ---------------------------------------


def test_the_webhook_names_every_problem_the_engine_would_meet() -> None:
    from cadenza.kube import admission

    new = {"metadata": {"name": "t"}, "spec": {
        **GOOD, "schedule": "@every 9999999999999h", "startingDeadlineSeconds": 2**40,
        "retry": {"maxAttempts": 0},
    }}  # fmt: skip
    problems = admission.task_problems(new)
    assert [p.split(":")[0] for p in problems] == [
        "spec.schedule",
        "spec.retry.maxAttempts",
        "spec.startingDeadlineSeconds",
    ]
    assert problems == [str(p) for p in taskspec.read_task_spec(new["spec"])[1]]


def test_the_webhook_ratchets_every_field_not_only_the_schedule() -> None:
    from cadenza.kube import admission

    stored = {"metadata": {"name": "t"}, "spec": {**GOOD, "startingDeadlineSeconds": 2**40}}
    suspended = {"metadata": {"name": "t"}, "spec": {**stored["spec"], "suspend": True}}
    # An edit that leaves the stored bad value alone passes; one that writes a bad value fails.
    assert admission.task_problems(suspended, stored) == []
    worse = {"metadata": {"name": "t"}, "spec": {**stored["spec"], "timeoutSeconds": 0}}
    assert [p.split(":")[0] for p in admission.task_problems(worse, stored)] == [
        "spec.timeoutSeconds"
    ]


def test_an_executor_whose_spec_cannot_be_read_is_reported_and_kept_out_alone() -> None:
    from cadenza.dispatch.client import DispatchClient
    from cadenza.executors.pool import ExecutorPool
    from cadenza.executors.status import build_status

    def executor(name: str, **spec: Any) -> ExecutorView:
        body = {"selector": {"matchLabels": {"app": "w"}}, **spec}
        return ExecutorView.from_body(
            {"metadata": {"uid": name, "namespace": "ns", "name": name}, "spec": body}
        )

    views = [executor("good"), executor("stale", port=10**12, scheme="gopher")]
    worker = PodView.from_body({
        "metadata": {"uid": "p", "namespace": "ns", "name": "w", "labels": {"app": "w"},
                     "annotations": {"cadenza.dev/weight": "\u00b2"}},
        "status": {"phase": "Running"},
    })  # fmt: skip
    pool = ExecutorPool(lambda: (views, [worker]), DispatchClient())
    shots = {s.name: s for s in pool.snapshot()}
    assert shots["good"].spec_error is None and len(shots["good"].pods) == 1
    assert shots["stale"].spec_error is not None
    assert "spec.port" in shots["stale"].spec_error and "spec.scheme" in shots["stale"].spec_error
    available = build_status(shots["stale"], [], NOW)["conditions"][0]
    assert (available["status"], available["reason"]) == ("False", "InvalidSpec")

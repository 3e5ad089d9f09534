"""An attempt every pod refuses as busy waits for room instead of failing at once: offered again
at growing intervals until its Task's ``startingDeadlineSeconds`` (else ``timeoutSeconds``)
after it was due, then failed as no pod took it. Over the in-memory store with an injected
clock, and through the lifecycle's loop with a pod that has room after a while."""

from __future__ import annotations

import dataclasses
import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from cadenza.core import runs as rules
from cadenza.core.ids import TaskUid
from cadenza.core.transitions import RunStatus
from cadenza.dispatch.client import DispatchRequest, DispatchResult, Outcome
from cadenza.executors.members import PodCandidate
from cadenza.kube.views import TaskView
from cadenza.metrics import Metrics
from cadenza.scheduling.dispatcher import Dispatcher, Sent
from cadenza.scheduling.openruns import Run
from cadenza.scheduling.plans import TaskPlan, plan_of
from cadenza.store.executions import Origin
from cadenza.store.memory import MemoryRunStore
from cadenza.store.port import NewRun
from tests.unit.test_cancel_during_dispatch import POD, until
from tests.unit.test_runs_sent_ahead import Pod, Pool, handed_over_ahead, lifecycle_with

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
TASK = TaskUid("uid-crowded")
PODS = [
    POD,
    dataclasses.replace(
        POD, pod="pod-b", pod_uid="pod-b-uid", ip="127.0.0.10", base_url="http://127.0.0.10:9090"
    ),
]


def test_the_waits_double_up_to_the_longest_and_the_last_offer_is_at_the_limit() -> None:
    rng = random.Random(7)
    waits = []
    for offers in range(1, 7):
        at = rules.offer_again_at(NOW, NOW, offers, 60, rng)
        assert at is not None
        waits.append((at - NOW).total_seconds())
    bounds = [0.5, 1, 2, 4, 4, 4]
    assert all(b / 2 <= w <= b for w, b in zip(waits, bounds, strict=True)), waits
    near_limit = NOW + timedelta(seconds=59.9)
    assert rules.offer_again_at(NOW, near_limit, 6, 60, rng) == NOW + timedelta(seconds=60)
    assert rules.offer_again_at(NOW, NOW + timedelta(seconds=60), 7, 60, rng) is None


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class BothPods:
    def candidates(self, namespace: str, names: Any) -> list[PodCandidate]:
        return list(PODS)

    def __getattr__(self, name: str) -> Any:
        return lambda *args: None  # note_dispatched, ...


class Answers:
    """Each pod answers with its own outcome; every request is noted."""

    def __init__(self, **by_pod: Outcome) -> None:
        self.by_pod = by_pod
        self.sent: list[tuple[str, DispatchRequest]] = []

    async def send(self, base_url: str, token: Any, request: DispatchRequest) -> DispatchResult:
        pod = next(p.pod for p in PODS if p.base_url == base_url)
        self.sent.append((pod, request))
        outcome = self.by_pod[pod]
        status = {Outcome.BUSY: 429, Outcome.DRAINING: 503, Outcome.ACCEPTED: 202}[outcome]
        return DispatchResult(outcome, status, {"error": outcome.value}, outcome.value, pod)


def spec(**fields: Any) -> TaskPlan:
    base = {"schedule": "* * * * * *", "executors": [{"name": "workers"}], "timeoutSeconds": 30}
    return plan_of(TaskView.of(str(TASK), "ns", "crowded", 1, {**base, **fields}))


def dispatcher(store: MemoryRunStore, answers: Answers, clock: Clock, task: TaskPlan) -> Dispatcher:
    return Dispatcher(
        store=store,
        epoch=store.epoch,
        pool=BothPods(),  # type: ignore[arg-type]
        plans={TASK: task},
        client=answers,  # type: ignore[arg-type]
        callback_base_url="http://127.0.0.1:1",
        metrics=Metrics(),
        lease_valid=lambda: True,
        rng=random.Random(3),
        clock=clock,
    )


@dataclasses.dataclass
class Scene:
    store: MemoryRunStore
    clock: Clock
    answers: Answers
    task: TaskPlan
    sending: Dispatcher
    run: Run
    """Claimed for the tick ``NOW``, to be sent."""


async def scene(pod_b: Outcome = Outcome.BUSY, **fields: Any) -> Scene:
    """Two pods, the first busy, the second answering ``pod_b``; a Task of ``fields``."""
    store, clock = MemoryRunStore(clock=lambda: NOW), Clock()
    answers = Answers(**{"pod-a": Outcome.BUSY, "pod-b": pod_b})
    task = spec(**fields)
    store.mirror(TASK)
    new = NewRun(TASK, "ns", "crowded", NOW, Origin.SCHEDULE, RunStatus.CLAIMED, 3)
    (run_id,) = (await store.claim([new])).runs
    assert run_id is not None
    run = Run(run_id, TASK, 1, RunStatus.CLAIMED, NOW, NOW, "schedule")
    return Scene(store, clock, answers, task, dispatcher(store, answers, clock, task), run)


async def test_every_pod_busy_offers_the_attempt_again_until_the_starting_deadline() -> None:
    it = await scene(startingDeadlineSeconds=5)
    run, offers = it.run, []
    while True:
        sent = await it.sending.attempt(run, it.task, 1)
        if sent.how is not Sent.NO_ROOM:
            break
        assert sent.retry_at is not None
        assert it.clock.now < sent.retry_at <= NOW + timedelta(seconds=5)
        # Nothing is over: the run waits as it was, for the same attempt.
        assert (run.status, run.attempt, run.pod) == (RunStatus.CLAIMED, 1, None)
        offers.append(sent.retry_at)
        it.clock.now = sent.retry_at
    assert sent.how is Sent.ENDED and it.clock.now == NOW + timedelta(seconds=5)
    assert 3 <= len(offers) <= 10 and len(it.answers.sent) == 2 * (len(offers) + 1)
    assert {request.execution_key for _, request in it.answers.sent} == {f"{run.id}-1"}
    row = it.store.runs[run.id]
    assert row.status is RunStatus.FAILED and row.attempt == 1  # no retries: the run is over
    assert sent.error is not None and sent.error.startswith("no executor pod accepted the run (")
    assert f"offered {len(offers) + 1} times within 5 s of its time" in sent.error
    assert run.room_waits == 0


async def test_without_a_starting_deadline_a_run_waits_its_timeout() -> None:
    it = await scene(timeoutSeconds=12)
    it.clock.now = NOW + timedelta(seconds=11.99)
    sent = await it.sending.attempt(it.run, it.task, 1)
    assert sent.how is Sent.NO_ROOM and sent.retry_at == NOW + timedelta(seconds=12)
    it.clock.now = NOW + timedelta(seconds=12)
    assert (await it.sending.attempt(it.run, it.task, 1)).how is Sent.ENDED


async def test_a_pod_that_takes_it_after_waiting_ends_the_wait() -> None:
    it = await scene()
    first = await it.sending.attempt(it.run, it.task, 1)
    assert first.how is Sent.NO_ROOM and first.retry_at is not None
    it.clock.now = first.retry_at
    it.answers.by_pod["pod-b"] = Outcome.ACCEPTED  # a run ended there
    assert (await it.sending.attempt(it.run, it.task, 1)).how is Sent.RUNNING
    run = it.run
    assert (run.status, run.attempt, run.pod, run.room_waits) == (RunStatus.RUNNING, 1, "pod-b", 0)
    assert it.store.runs[run.id].status is RunStatus.RUNNING


async def test_a_pod_refusing_for_another_reason_ends_the_attempt_as_before() -> None:
    it = await scene(pod_b=Outcome.DRAINING)
    sent = await it.sending.attempt(it.run, it.task, 1)
    assert sent.how is Sent.ENDED and len(it.answers.sent) == 2


async def test_a_retry_waiting_for_room_keeps_its_attempt_and_counts_from_its_backoff() -> None:
    it = await scene(startingDeadlineSeconds=3)
    run = it.run
    it.clock.now = NOW + timedelta(seconds=10)  # long past the tick: the first attempt failed
    outcome = rules.Outcome(RunStatus.FAILED, error="exit code 1")
    backoff_over = it.clock.now
    assert await it.store.give_up(run.id, 1, outcome, backoff_over)
    run.status, run.next_attempt_at = RunStatus.QUEUED, backoff_over
    sent = await it.sending.attempt(run, it.task, 2)
    assert sent.how is Sent.NO_ROOM, "its wait counts from its backoff's end, not the tick"
    assert (run.status, run.attempt) == (RunStatus.QUEUED, 1)  # the lifecycle sends attempt 2
    it.clock.now = backoff_over + timedelta(seconds=3)
    assert (await it.sending.attempt(run, it.task, 2)).how is Sent.ENDED
    assert {request.execution_key for _, request in it.answers.sent} == {f"{run.id}-2"}


async def test_through_the_loop_a_run_waits_until_its_pod_has_room() -> None:
    store, pod = MemoryRunStore(), Pod(busy=3)
    lifecycle = lifecycle_with(store, Pool(POD), pod)
    async with handed_over_ahead(store, lifecycle, seconds=0.05) as (run, _):
        await until(lambda: store.runs[run].status is RunStatus.RUNNING, "room on the pod")
        assert store.runs[run].attempt == 1 and store.runs[run].error is None
        times = [came for came, _ in pod.received]
        assert len(times) == 4
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        assert gaps[0] >= 0.25 and gaps[1] >= 0.5 and gaps[2] >= 1.0, gaps

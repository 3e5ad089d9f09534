"""The run rules carried out through the store port, over the in-memory store with an injected
clock: a run nobody reported on is retried by its Task's policy, then ends; a run no pod took
counts as a failed attempt; a result that arrived first wins over the leader's guess."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from cadenza.core import runs as rules
from cadenza.core.ids import ExecutionId, TaskUid
from cadenza.core.transitions import RunStatus
from cadenza.kube.views import TaskView
from cadenza.metrics import Metrics
from cadenza.scheduling.dispatcher import Dispatcher, Sent
from cadenza.scheduling.openruns import Run
from cadenza.scheduling.plans import TaskPlan, plan_of
from cadenza.scheduling.settling import Settler
from cadenza.store.executions import Origin
from cadenza.store.memory import MemoryRunStore
from cadenza.store.port import Begin, NewRun
from cadenza.store.runs import Dispatch

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
TASK = TaskUid("uid-retrying")


def plan(**retry: int) -> TaskPlan:
    spec = {
        "schedule": "* * * * * *",
        "executors": [{"name": "workers"}],
        "retry": {"maxAttempts": 3, "backoffSeconds": 10, "jitterPercent": 0, **retry},
    }
    view = TaskView.of(str(TASK), "ns", "retrying", 1, spec)
    return plan_of(view)


async def running_run(store: MemoryRunStore) -> Run:
    store.mirror(TASK)
    tick = NewRun(TASK, "ns", "retrying", NOW, Origin.SCHEDULE, RunStatus.CLAIMED, 3)
    (run_id,) = (await store.claim([tick])).runs
    assert run_id is not None
    to = Dispatch("workers", "pod-a", None, "h" * 64, NOW + timedelta(seconds=30))
    assert await store.begin_dispatch(Begin(run_id, 1, to))
    assert await store.confirm(run_id, 1)
    return Run(run_id, TASK, 1, RunStatus.RUNNING, NOW, NOW, "schedule", pod="pod-a")


def settler(store: MemoryRunStore, task: TaskPlan) -> Settler:
    return Settler(
        store=store,
        pool=None,  # type: ignore[arg-type]  # not asked: these runs have no pod to locate
        dispatcher=SimpleNamespace(client=None),  # type: ignore[arg-type]  # nothing is sent
        plans={TASK: task},
        rng=random.Random(1),
        clock=lambda: NOW,
    )


async def test_a_lost_attempt_is_retried_by_the_policy_and_the_last_one_ends_the_run() -> None:
    store = MemoryRunStore(clock=lambda: NOW)
    run = await running_run(store)
    settled = await settler(store, plan()).fail(run, RunStatus.LOST, "no answer")
    assert settled.applied
    assert settled.decision == rules.Retry(
        rules.Outcome(RunStatus.LOST, error="no answer"), NOW + timedelta(seconds=10)
    )
    row = store.runs[run.id]
    assert (row.status, row.next_attempt_at) == (RunStatus.QUEUED, NOW + timedelta(seconds=10))

    # The third attempt is the last the policy allows: it ends the run.
    to = Dispatch("workers", "pod-b", None, "h" * 64, NOW + timedelta(seconds=30))
    assert await store.begin_dispatch(Begin(run.id, 3, to))
    run.attempt = 3
    settled = await settler(store, plan()).fail(run, RunStatus.TIMED_OUT, "too slow")
    assert settled.applied and isinstance(settled.decision, rules.Finish)
    assert store.runs[run.id].status is RunStatus.TIMED_OUT


async def test_a_result_that_arrived_first_wins_over_the_leaders_guess() -> None:
    store = MemoryRunStore(clock=lambda: NOW)
    run = await running_run(store)
    ok = rules.Finish(rules.Outcome(RunStatus.SUCCEEDED))
    assert await store.end_attempt(run.id, 1, ok)
    settled = await settler(store, plan()).fail(run, RunStatus.LOST, "no answer")
    assert not settled.applied
    assert store.runs[ExecutionId(run.id)].status is RunStatus.SUCCEEDED


async def test_a_run_no_pod_took_counts_as_a_failed_attempt() -> None:
    store = MemoryRunStore(clock=lambda: NOW)
    store.mirror(TASK)
    tick = NewRun(TASK, "ns", "retrying", NOW, Origin.SCHEDULE, RunStatus.CLAIMED, 1)
    (run_id,) = (await store.claim([tick])).runs
    assert run_id is not None
    run = Run(run_id, TASK, 1, RunStatus.CLAIMED, NOW, NOW, "schedule")
    dispatcher = Dispatcher(
        store=store,
        epoch=store.epoch,
        pool=None,  # type: ignore[arg-type]  # give_up asks no pod
        plans={},
        client=None,  # type: ignore[arg-type]
        callback_base_url="http://127.0.0.1:1",
        metrics=Metrics(),
        lease_valid=lambda: True,
        rng=random.Random(1),
        clock=lambda: NOW,
    )
    once = plan(maxAttempts=1)
    sent = await dispatcher.give_up(run, once.retry, 1, "no executor pod accepted the run")
    assert (sent.how, sent.retry_at) == (Sent.ENDED, None)
    row = store.runs[run_id]
    assert (row.status, row.error) == (RunStatus.FAILED, "no executor pod accepted the run")
    # Given up twice: the second finds the run over and changes nothing.
    again = await dispatcher.give_up(run, once.retry, 1, "again")
    assert again.how is Sent.NOT_OURS and store.runs[run_id].error == sent.error

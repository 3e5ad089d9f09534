"""The leader's store port keeps one contract, in memory and on MySQL: the same suite runs
against both. The scheduler's and the run rules' unit tests rely on the memory store behaving
as the real one does."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.engine import Engine, make_url

from cadenza.core import runs as rules
from cadenza.core.ids import Epoch, ExecutionId, TaskUid
from cadenza.core.transitions import RunStatus
from cadenza.devenv import mariadb
from cadenza.metrics import Metrics
from cadenza.store import changelog, fencing, mirror, retention
from cadenza.store import engine as store_engine
from cadenza.store.executions import Origin
from cadenza.store.leader_store import PRUNE_BATCH, LeaderStore
from cadenza.store.memory import MemoryRunStore
from cadenza.store.mirror_rows import TaskRow
from cadenza.store.port import Balance, Begin, HistoryLimit, NewRun, RunStore
from cadenza.store.runs import Dispatch

LOCK = "cadenza-leader"
TICK = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
FAILED = rules.Outcome(RunStatus.FAILED, error="exit 1")


@dataclass
class Backend:
    store: RunStore
    mirror: Callable[[TaskUid], None]
    fence: Callable[[], None]
    note: Callable[[ExecutionId], None]
    """What a callback applied by any replica leaves in the change log."""


def _bump(session: Any, instance: str) -> Epoch:
    with session.cursor() as cur:
        cur.execute(fencing.BUMP_EPOCH_SQL, (LOCK, instance))
        cur.execute("SELECT epoch FROM leader_epochs WHERE lock_name = %s", (LOCK,))
        row = cur.fetchone()
    return Epoch(int(row[0]))


def _task_row(uid: TaskUid) -> TaskRow:
    return TaskRow(
        uid=uid,
        namespace="ns",
        name=f"task-{uid[:8]}",
        generation=1,
        cron_expression="* * * * * *",
        time_zone="UTC",
        suspend=False,
        execution_mode="Parallel",
        load_balance_strategy="RoundRobin",
        handler="echo",
        timeout_seconds=30,
        spec_json='{"schedule":"* * * * * *"}',
        spec_hash=uid.replace("-", "").ljust(64, "0")[:64],
    )


@pytest.fixture
def fire_engine(database: str) -> Iterator[Engine]:
    """The fire lane's pool of one, as a replica gives its leader."""
    eng = store_engine.create_engine(database, pool_size=1)
    yield eng
    eng.dispose()


@pytest.fixture
def mysql_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    server: mariadb.Server = request.getfixturevalue("mariadb_server")
    database: str = request.getfixturevalue("database")
    engine: Engine = request.getfixturevalue("engine")
    session = server.connect(make_url(database).database)
    epoch = _bump(session, "replica-a")
    store = LeaderStore(engine, LOCK, epoch, fire_engine=request.getfixturevalue("fire_engine"))

    def mirror_task(uid: TaskUid) -> None:
        with fencing.leader_transaction(engine, LOCK, epoch) as conn:
            mirror.upsert_task(conn, _task_row(uid))

    def note(run: ExecutionId) -> None:
        with engine.begin() as conn:
            changelog.note_change(conn, run)

    yield Backend(store, mirror_task, lambda: _bump(session, "replica-b") and None, note)
    session.close()


@pytest.fixture(params=["memory", pytest.param("mysql", marks=pytest.mark.mariadb)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        memory = MemoryRunStore()
        yield Backend(memory, memory.mirror, lambda: memory.fence(2), memory.record_change)
        return
    chosen: Backend = request.getfixturevalue("mysql_backend")
    yield chosen
    await chosen.store.close()


def new_task(backend: Backend, mirrored: bool = True) -> TaskUid:
    uid = TaskUid(str(uuid.uuid4()))
    if mirrored:
        backend.mirror(uid)
    return uid


def tick_run(uid: TaskUid, tick: datetime = TICK, **kw: Any) -> NewRun:
    values: dict[str, Any] = {"status": RunStatus.CLAIMED, "max_attempts": 3, **kw}
    return NewRun(uid, "ns", "t", tick, Origin.SCHEDULE, **values)


def to(pod: str, seconds: int = 30) -> Dispatch:
    return Dispatch(
        "workers", pod, "127.0.0.9", "h" * 64, datetime.now(UTC) + timedelta(seconds=seconds)
    )


async def claimed(backend: Backend, **kw: Any) -> ExecutionId:
    uid = new_task(backend)
    result = await backend.store.claim([tick_run(uid, **kw)])
    run = result.runs[0]
    assert run is not None
    return run


async def status(backend: Backend, run: ExecutionId) -> tuple[RunStatus, int]:
    row = (await backend.store.current([run]))[run]
    return row.status, row.attempt


async def test_a_tick_is_claimed_once_and_triggers_once_per_key(backend: Backend) -> None:
    uid = new_task(backend)
    first = await backend.store.claim([tick_run(uid), tick_run(uid, TICK + timedelta(seconds=1))])
    again = await backend.store.claim([tick_run(uid)])
    assert all(first.runs) and again.runs == [None]
    manual = NewRun(uid, "ns", "t", None, Origin.MANUAL, RunStatus.CLAIMED, trigger_key="v1")
    assert (await backend.store.claim([manual])).runs[0] is not None
    assert (await backend.store.claim([manual])).runs == [None]
    assert await backend.store.last_ticks([uid]) == {uid: TICK + timedelta(seconds=1)}
    # Where a run stands names its Task: the leader touches the Task of a run it let go of.
    assert {row.task for row in (await backend.store.current(first.runs)).values()} == {uid}


async def test_a_batch_claims_only_what_is_new_and_each_id_is_its_own_run(
    backend: Backend,
) -> None:
    tasks = [new_task(backend) for _ in range(4)]
    before = await backend.store.claim([tick_run(tasks[1]), tick_run(tasks[3])])
    odd_key = 'it\'s "odd" % \\ ünïcode'
    manual = NewRun(
        tasks[2], "ns", "t", None, Origin.MANUAL, RunStatus.CLAIMED, trigger_key=odd_key
    )
    batch = [tick_run(uid) for uid in tasks] + [manual, tick_run(tasks[0]), manual]
    runs = (await backend.store.claim(batch)).runs
    assert runs[1] is None and runs[3] is None  # claimed before
    assert runs[5] is None and runs[6] is None  # the same tick and trigger again in the batch
    assert runs[0] is not None and runs[2] is not None and runs[4] is not None
    mine = {r.id: r for r in await backend.store.open_runs()}
    assert set(before.runs) | {runs[0], runs[2], runs[4]} <= set(mine)
    assert (mine[runs[0]].task_uid, mine[runs[0]].scheduled_at) == (tasks[0], TICK)
    assert (mine[runs[2]].task_uid, mine[runs[2]].scheduled_at) == (tasks[2], TICK)
    assert (mine[runs[4]].task_uid, mine[runs[4]].trigger_key) == (tasks[2], odd_key)
    assert (await backend.store.claim([manual])).runs == [None]


async def test_a_batch_of_dispatches_gets_an_answer_per_run(backend: Backend) -> None:
    waiting, finished, refused, in_flight = [await claimed(backend) for _ in range(4)]
    assert await backend.store.end_attempt(finished, 1, rules.Finish(FAILED))
    for run in (refused, in_flight):
        assert await backend.store.begin_dispatch(Begin(run, 1, to("pod-a")))
    answers = await asyncio.gather(
        backend.store.begin_dispatch(Begin(waiting, 1, to("pod-b"))),
        backend.store.begin_dispatch(Begin(finished, 1, to("pod-b"))),
        backend.store.begin_dispatch(Begin(refused, 1, to("pod-b"))),  # the next pod
        backend.store.begin_dispatch(Begin(in_flight, 2, to("pod-b"))),  # never a second
    )
    assert answers == [True, False, True, False]
    now = await backend.store.current([waiting, finished, refused, in_flight])
    got = {run: (row.status, row.attempt, row.pod_name) for run, row in now.items()}
    assert got == {
        waiting: (RunStatus.DISPATCHED, 1, "pod-b"),
        finished: (RunStatus.FAILED, 1, None),
        refused: (RunStatus.DISPATCHED, 1, "pod-b"),
        in_flight: (RunStatus.DISPATCHED, 1, "pod-a"),
    }


async def test_a_tick_given_in_another_zone_is_the_same_tick(backend: Backend) -> None:
    uid = new_task(backend)
    first = await backend.store.claim([tick_run(uid)])
    elsewhere = TICK.astimezone(timezone(timedelta(hours=5, minutes=30)))
    again = await backend.store.claim([tick_run(uid, elsewhere)])
    assert first.runs[0] is not None and again.runs == [None]


async def test_runs_without_tick_or_trigger_are_never_deduplicated(backend: Backend) -> None:
    uid = new_task(backend)
    api = NewRun(uid, "ns", "t", None, Origin.API, RunStatus.CLAIMED)
    result = await backend.store.claim([api, api, tick_run(uid), tick_run(uid)])
    first, second, tick, again = result.runs
    assert first is not None and second is not None and first != second
    assert tick is not None and again is None  # the same tick twice in one batch: once


async def test_claims_of_tasks_not_mirrored_yet_come_back(backend: Backend) -> None:
    known, unknown = new_task(backend), new_task(backend, mirrored=False)
    result = await backend.store.claim([tick_run(known), tick_run(unknown)])
    assert result.runs[0] is not None and result.runs[1] is None
    assert result.unmirrored == frozenset({unknown})


async def test_a_skipped_tick_is_over_as_soon_as_it_exists(backend: Backend) -> None:
    run = await claimed(backend, status=RunStatus.SKIPPED)
    assert await status(backend, run) == (RunStatus.SKIPPED, 1)
    assert run not in {r.id for r in await backend.store.open_runs()}


async def test_dispatch_confirm_finish(backend: Backend) -> None:
    run = await claimed(backend)
    assert await backend.store.begin_dispatch(Begin(run, 1, to("pod-a")))
    assert await backend.store.confirm(run, 1)
    assert await status(backend, run) == (RunStatus.RUNNING, 1)
    done = rules.Finish(rules.Outcome(RunStatus.SUCCEEDED, result={"ok": True}))
    assert await backend.store.end_attempt(run, 1, done)
    assert await status(backend, run) == (RunStatus.SUCCEEDED, 1)
    # A duplicate changes nothing, and a finished run never moves back.
    assert not await backend.store.end_attempt(run, 1, done)
    assert not await backend.store.end_attempt(run, 1, rules.Finish(FAILED))
    assert not await backend.store.confirm(run, 1)
    assert await status(backend, run) == (RunStatus.SUCCEEDED, 1)


async def test_a_refused_attempt_is_pointed_at_the_next_pod_without_going_back(
    backend: Backend,
) -> None:
    run = await claimed(backend)
    assert await backend.store.begin_dispatch(Begin(run, 1, to("pod-a")))
    assert await backend.store.begin_dispatch(Begin(run, 1, to("pod-b")))
    row = (await backend.store.current([run]))[run]
    assert (row.status, row.attempt, row.pod_name) == (RunStatus.DISPATCHED, 1, "pod-b")
    # But never a second attempt of a run in flight.
    assert not await backend.store.begin_dispatch(Begin(run, 2, to("pod-c")))


async def test_no_pod_took_it_retry_then_fail(backend: Backend) -> None:
    run = await claimed(backend)
    at = datetime.now(UTC) + timedelta(seconds=5)
    assert await backend.store.begin_dispatch(Begin(run, 1, to("pod-a")))
    assert await backend.store.give_up(run, 1, FAILED, at)
    row = (await backend.store.current([run]))[run]
    assert (row.status, row.attempt) == (RunStatus.QUEUED, 1)
    assert row.next_attempt_at is not None
    assert await backend.store.give_up(run, 2, FAILED, None)
    assert await status(backend, run) == (RunStatus.FAILED, 2)
    assert not await backend.store.give_up(run, 3, FAILED, None)


async def test_a_bad_attempt_is_retried_then_the_last_one_ends_the_run(backend: Backend) -> None:
    run = await claimed(backend)
    await backend.store.begin_dispatch(Begin(run, 1, to("pod-a")))
    retry = rules.Retry(FAILED, datetime.now(UTC) + timedelta(seconds=1))
    assert await backend.store.end_attempt(run, 1, retry)
    assert await status(backend, run) == (RunStatus.QUEUED, 1)
    # A late duplicate of the same report finds the attempt closed.
    assert not await backend.store.end_attempt(run, 1, rules.Finish(FAILED))
    assert await backend.store.begin_dispatch(Begin(run, 2, to("pod-b")))
    # A stale attempt's report does not touch the new one.
    assert not await backend.store.end_attempt(run, 1, rules.Finish(FAILED))
    assert await backend.store.end_attempt(run, 2, rules.Finish(FAILED))
    assert await status(backend, run) == (RunStatus.FAILED, 2)


async def test_lost_is_corrected_by_the_real_result(backend: Backend) -> None:
    run = await claimed(backend)
    await backend.store.begin_dispatch(Begin(run, 1, to("pod-a")))
    lost = rules.Finish(rules.Outcome(RunStatus.LOST, error="no answer"))
    assert await backend.store.end_attempt(run, 1, lost)
    ok = rules.Finish(rules.Outcome(RunStatus.SUCCEEDED))
    assert await backend.store.end_attempt(run, 1, ok)
    assert await status(backend, run) == (RunStatus.SUCCEEDED, 1)


async def test_the_leader_cancels_a_queued_run_of_a_deleted_task(backend: Backend) -> None:
    run = await claimed(backend, status=RunStatus.QUEUED)
    cancelled = rules.Finish(rules.Outcome(RunStatus.CANCELLED, error="the Task was deleted"))
    assert await backend.store.end_attempt(run, 1, cancelled)
    assert await status(backend, run) == (RunStatus.CANCELLED, 1)


async def test_open_runs_and_balancer_state(backend: Backend) -> None:
    a, b = await claimed(backend), await claimed(backend)
    await backend.store.end_attempt(b, 1, rules.Finish(rules.Outcome(RunStatus.CANCELLED)))
    opened = [r.id for r in await backend.store.open_runs()]
    assert a in opened and b not in opened
    uid = TaskUid(str(uuid.uuid4()))
    backend.mirror(uid)
    run = (await backend.store.claim([tick_run(uid)])).runs[0]
    assert run is not None
    state = {"cursor": "pod-b"}
    await backend.store.begin_dispatch(
        Begin(run, 1, to("pod-b"), Balance(uid, "RoundRobin", state))
    )
    assert await backend.store.balance_state(uid, "RoundRobin") == state
    assert await backend.store.balance_state(uid, "Weighted") == {}


async def test_concurrent_writes_each_get_their_own_answer(backend: Backend) -> None:
    uid = new_task(backend)
    ticks = [tick_run(uid, TICK + timedelta(seconds=i)) for i in range(20)]
    runs = [r for r in (await backend.store.claim(ticks)).runs if r is not None]
    begins = await asyncio.gather(
        *(backend.store.begin_dispatch(Begin(r, 1, to(f"pod-{r % 3}"))) for r in runs)
    )
    assert all(begins)
    # Half confirmed twice over: the second of each pair must not apply.
    answers = await asyncio.gather(
        *(backend.store.confirm(r, 1) for r in runs[:10]),
        *(backend.store.confirm(r, 1) for r in runs[:10]),
    )
    assert sorted(answers) == [False] * 10 + [True] * 10


async def test_retention_prunes_only_finished_runs_beyond_the_limit(backend: Backend) -> None:
    uid = new_task(backend)
    ticks = [tick_run(uid, TICK + timedelta(seconds=i)) for i in range(5)]
    runs = [r for r in (await backend.store.claim(ticks)).runs if r is not None]
    for r in runs[:4]:
        await backend.store.end_attempt(r, 1, rules.Finish(rules.Outcome(RunStatus.CANCELLED)))
    assert await backend.store.prune([HistoryLimit(uid, 86400, 2)]) == 3
    left = await backend.store.current(runs)
    assert sorted(left) == runs[3:]


async def finished_runs(
    backend: Backend, uid: TaskUid, n: int, finished_at: datetime | None = None
) -> list[ExecutionId]:
    ticks = [tick_run(uid, TICK + timedelta(seconds=i)) for i in range(n)]
    runs = [r for r in (await backend.store.claim(ticks)).runs if r is not None]
    outcome = rules.Outcome(RunStatus.SUCCEEDED, finished_at=finished_at)
    for r in runs:
        assert await backend.store.end_attempt(r, 1, rules.Finish(outcome))
    return runs


async def test_one_retention_call_prunes_each_task_by_its_own_limits(backend: Backend) -> None:
    over, under, aged = new_task(backend), new_task(backend), new_task(backend)
    over_runs = await finished_runs(backend, over, 4)
    under_runs = await finished_runs(backend, under, 2)
    # Finished long ago: beyond a day's age though well under the number.
    aged_runs = await finished_runs(backend, aged, 2, finished_at=TICK)
    still_open = (await backend.store.claim([tick_run(aged, TICK + timedelta(hours=1))])).runs[0]
    assert still_open is not None
    limits = [
        HistoryLimit(over, 86400, 1),
        HistoryLimit(under, 86400, 5),
        HistoryLimit(aged, 86400, 1000),
    ]
    assert await backend.store.prune(limits) == 3 + 2
    left = await backend.store.current([*over_runs, *under_runs, *aged_runs, still_open])
    assert sorted(left) == sorted([over_runs[-1], *under_runs, still_open])
    assert await backend.store.prune(limits) == 0


async def test_retention_over_many_tasks_spans_transactions(backend: Backend) -> None:
    tasks = [new_task(backend) for _ in range(retention.TASKS_PER_TRANSACTION + 20)]
    kept = []
    for uid in tasks:
        kept.append((await finished_runs(backend, uid, 2))[-1])
    assert await backend.store.prune([HistoryLimit(uid, 86400, 1) for uid in tasks]) == len(tasks)
    assert sorted(await backend.store.current(kept)) == sorted(kept)


async def test_a_large_backlog_never_keeps_another_task_from_being_pruned(
    backend: Backend,
) -> None:
    # The heavy Task sorts first, so its runs come first where the index is read in order.
    heavy, light = sorted([new_task(backend), new_task(backend)])
    backlog = PRUNE_BATCH + 50
    ticks = [tick_run(heavy, TICK + timedelta(seconds=i)) for i in range(backlog)]
    runs = [r for r in (await backend.store.claim(ticks)).runs if r is not None]
    done = rules.Finish(rules.Outcome(RunStatus.SUCCEEDED))
    assert all(await asyncio.gather(*(backend.store.end_attempt(r, 1, done) for r in runs)))
    light_runs = await finished_runs(backend, light, 3)
    limits = [HistoryLimit(heavy, 86400, 1), HistoryLimit(light, 86400, 1)]
    await backend.store.prune(limits)
    assert sorted(await backend.store.current(light_runs)) == light_runs[-1:]
    await backend.store.prune(limits)
    assert sorted(await backend.store.current(runs)) == runs[-1:]


async def test_retention_with_nothing_to_prune_writes_nothing(backend: Backend) -> None:
    uid = new_task(backend)
    runs = await finished_runs(backend, uid, 3)
    backend.fence()
    # An overtaken leader learns nothing is due without a write; with something due it is
    # refused before anything goes.
    assert await backend.store.prune([HistoryLimit(uid, 86400, 3)]) == 0
    with pytest.raises(fencing.Fenced):
        await backend.store.prune([HistoryLimit(uid, 86400, 1)])
    assert sorted(await backend.store.current(runs)) == sorted(runs)


async def test_an_overtaken_epoch_writes_nothing(backend: Backend) -> None:
    run = await claimed(backend)
    backend.fence()
    with pytest.raises(fencing.Fenced):
        await backend.store.begin_dispatch(Begin(run, 1, to("pod-a")))
    with pytest.raises(fencing.Fenced):
        await backend.store.claim([tick_run(new_task(backend, mirrored=False))])
    assert await status(backend, run) == (RunStatus.CLAIMED, 1)


async def test_the_change_log_is_read_by_cursor(backend: Backend) -> None:
    start = await backend.store.last_change()
    a, b, c = (ExecutionId(9000 + i) for i in range(3))
    for run in (a, b, c):
        backend.note(run)
    found = await backend.store.changes_since(start, [], 100)
    assert [run for _, run in found] == [a, b, c]
    seqs = [seq for seq, _ in found]
    assert seqs == sorted(seqs) and await backend.store.last_change() == seqs[-1]
    # Above a position, plus the gaps asked for again; at most the limit.
    assert [run for _, run in await backend.store.changes_since(seqs[1], [seqs[0]], 100)] == [a, c]
    assert len(await backend.store.changes_since(start, [], 2)) == 2
    # Nothing is old enough to prune yet.
    assert await backend.store.prune_changes(3600) == 0


@pytest.mark.mariadb
async def test_claims_and_dispatch_records_need_no_connection_of_the_shared_pool(
    mysql_backend: Backend, engine: Engine
) -> None:
    """Callbacks, status reads or the mirror may hold every connection of the shared pool: the
    fire path has its own and does not wait for them."""
    uid = new_task(mysql_backend)
    held = [engine.connect() for _ in range(engine.pool.size())]  # type: ignore[attr-defined]
    try:
        claims = await asyncio.wait_for(mysql_backend.store.claim([tick_run(uid)]), 10)
        [run] = claims.runs
        assert run is not None
        state = {"next": 1}
        begun = mysql_backend.store.begin_dispatch(
            Begin(run, 1, to("pod-a"), Balance(uid, "RoundRobin", state))
        )
        assert await asyncio.wait_for(begun, 10)
        saved = mysql_backend.store.balance_state(uid, "RoundRobin")
        assert await asyncio.wait_for(saved, 10) == state
    finally:
        for conn in held:
            conn.close()


@pytest.mark.mariadb
async def test_each_lane_times_its_operations(mysql_backend: Backend, engine: Engine) -> None:
    """``cadenza_store_lane_seconds`` counts every operation of each lane once: claims and
    dispatch records on the fire lane, confirmations on the books lane."""
    metrics = Metrics()
    store = LeaderStore(engine, LOCK, mysql_backend.store.epoch, metrics)
    try:
        uid = new_task(mysql_backend)
        [run] = (await store.claim([tick_run(uid)])).runs
        assert run is not None
        assert await store.begin_dispatch(Begin(run, 1, to("pod-a")))
        assert await store.confirm(run, 1)
    finally:
        await store.close()

    def operations(lane: str) -> float | None:
        return metrics.registry.get_sample_value("cadenza_store_lane_seconds_count", {"lane": lane})

    assert (operations("fire"), operations("books")) == (2, 1)

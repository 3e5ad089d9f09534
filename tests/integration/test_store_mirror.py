"""The resource mirror: writes keyed by uid and skipped when the spec hash is unchanged, executor
references resolved by name, full resyncs, and refused writes that leave the mirror as it was."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

from cadenza.core.ids import Epoch, TaskUid
from cadenza.core.taskspec import ExecutorRef
from cadenza.devenv import mariadb
from cadenza.store import executions, fencing, mirror, mirror_reads, mirror_tasks, schema
from cadenza.store.mirror_rows import ExecutorLink, ExecutorRow, InstanceRow, ResyncCounts, TaskRow
from tests.support import wait_for

pytestmark = pytest.mark.mariadb

LOCK = "cadenza-leader"
Leader = Callable[[], AbstractContextManager[Connection]]


@pytest.fixture
def bump(mariadb_server: mariadb.Server, database: str) -> Iterator[Callable[[], Epoch]]:
    """Takes the lead: bumps the epoch on a session of its own, as the leader lock does."""
    session = mariadb_server.connect(make_url(database).database)

    def bump() -> Epoch:
        with session.cursor() as cur:
            cur.execute(fencing.BUMP_EPOCH_SQL, (LOCK, "replica-a"))
            cur.execute("SELECT epoch FROM leader_epochs WHERE lock_name = %s", (LOCK,))
            row = cur.fetchone()
        assert row is not None
        return Epoch(int(row[0]))

    yield bump
    session.close()


@pytest.fixture
def leader(engine: Engine, bump: Callable[[], Epoch]) -> Leader:
    """Opens a leader transaction of the current epoch."""
    epoch = bump()
    return lambda: fencing.leader_transaction(engine, LOCK, epoch)


def digest(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def task(
    name: str,
    *refs: str,
    namespace: str = "ns",
    uid: str | None = None,
    schedule: str = "*/10 * * * * *",
    **fields: Any,
) -> TaskRow:
    spec = {"schedule": schedule, "executors": [{"name": r} for r in refs], "handler": "echo"}
    row = TaskRow(
        uid=TaskUid(uid or str(uuid.uuid4())),
        namespace=namespace,
        name=name,
        original_name=name.replace("-", "_"),
        generation=1,
        cron_expression=schedule,
        time_zone="UTC",
        suspend=False,
        execution_mode="Parallel",
        load_balance_strategy="RoundRobin",
        handler="echo",
        timeout_seconds=300,
        spec_json=json.dumps(spec),
        spec_hash=digest(spec),
        executors=tuple(ExecutorRef(r, weight=i + 1, priority=i) for i, r in enumerate(refs)),
    )
    return dataclasses.replace(row, **fields)


def executor(name: str, namespace: str = "ns", port: int = 9090) -> ExecutorRow:
    spec = {"selector": {"matchLabels": {"app": name}}, "port": port}
    return ExecutorRow(
        uid=str(uuid.uuid4()),
        namespace=namespace,
        name=name,
        selector=spec["selector"],  # type: ignore[arg-type]
        port=port,
        scheme="http",
        spec=spec,
        spec_hash=digest(spec),
        generation=1,
    )


def pod(name: str, ip: str | None = "10.0.0.1", ready: bool = True) -> InstanceRow:
    return InstanceRow(
        pod_uid=str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
        pod_name=name,
        namespace="ns",
        ip=ip,
        phase="Running",
        ready=ready,
    )


def changed(row: TaskRow, **spec_changes: Any) -> TaskRow:
    spec = {**row.spec, **spec_changes}
    return dataclasses.replace(
        row,
        spec_json=json.dumps(spec),
        spec_hash=digest(spec),
        generation=row.generation + 1,
        **spec_changes,
    )


def updated_at(engine: Engine, uid: str) -> datetime:
    with engine.connect() as conn:
        value = conn.execute(
            sa.select(schema.tasks.c.updated_at).where(schema.tasks.c.uid == uid)
        ).scalar_one()
    assert isinstance(value, datetime)
    return value


def db_clock_passes(engine: Engine, moment: datetime) -> None:
    def passed() -> bool:
        with engine.connect() as conn:
            now = conn.exec_driver_sql("SELECT UTC_TIMESTAMP(3)").scalar_one()
        return bool(now.replace(tzinfo=UTC) > moment)

    wait_for(passed, 5, "the database clock to move on")


@dataclasses.dataclass
class Mirror:
    tasks: list[TaskRow]
    executors: list[ExecutorRow]
    instances: dict[str, tuple[InstanceRow, ...]]
    links: list[ExecutorLink]


def snapshot(engine: Engine) -> Mirror:
    with engine.connect() as conn:
        return Mirror(
            mirror_reads.read_tasks(conn),
            mirror_reads.read_executors(conn),
            mirror_reads.read_instances(conn),
            mirror_reads.read_task_executors(conn),
        )


def missing(engine: Engine, uid: TaskUid) -> list[str] | None:
    with engine.connect() as conn:
        return mirror_reads.read_missing_executors(conn, uid)


# -- upserts -----------------------------------------------------------------------------------


def test_a_task_reads_back_as_written(engine: Engine, leader: Leader) -> None:
    pool, spare = executor("pool"), executor("spare")
    row = task("test-task", "spare", "pool")
    with leader() as conn:
        mirror.upsert_executor(conn, pool)
        mirror.upsert_executor(conn, spare)
        assert mirror.upsert_task(conn, row) is True

    state = snapshot(engine)
    assert state.tasks == [row]
    assert state.executors == [pool, spare]
    assert [(link.executor_name, link.executor_uid) for link in state.links] == [
        ("spare", spare.uid),
        ("pool", pool.uid),
    ]


def test_a_batch_of_new_tasks_keeps_every_value_as_written(engine: Engine, leader: Leader) -> None:
    # New Tasks are written as SQL text: values that need escaping, a suspended and an invalid
    # Task, and one naming an Executor that does not exist must all read back as written.
    hostile = 'it\'s 100% \\ "quoted" — 東京 \x00 ; DROP TABLE tasks; --'
    pool = executor("pool")
    spec = {**task("quoted", "pool").spec, "payload": {"text": hostile, "n": [1, 2.5, None]}}
    rows = [
        task(
            "quoted",
            "pool",
            original_name=hostile[:200],
            spec_json=json.dumps(spec, ensure_ascii=False),
            spec_hash=digest(spec),
        ),
        task("asleep", "pool", "absent", suspend=True),
        task("broken", valid=False, invalid_reason=f"spec.handler: {hostile}"),
    ]
    with leader() as conn:
        mirror.upsert_executor(conn, pool)
        changes = mirror_tasks.upsert_tasks(conn, rows)
    assert [changes[row.uid].name for row in rows] == ["CREATED"] * 3

    state = snapshot(engine)
    by_name = {row.name: row for row in state.tasks}
    assert [by_name[row.name] for row in rows] == rows
    assert [by_name[row.name].spec for row in rows] == [row.spec for row in rows]
    assert missing(engine, rows[1].uid) == ["absent"]
    with engine.connect() as conn:
        epochs = conn.execute(sa.select(schema.tasks.c.epoch)).scalars().all()
    assert len(epochs) == 3 and len(set(epochs)) == 1 and epochs[0] is not None


def test_a_batch_larger_than_the_servers_packet_limit_is_mirrored_whole(
    engine: Engine, leader: Leader
) -> None:
    # A resync writes every Task at once, and a payload may be nearly as large as the API server
    # lets an object be: the batch goes in several statements, each one the server accepts.
    with engine.connect() as conn:
        packet = int(conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar_one())
    payload = "p" * 900_000
    count = packet // len(payload) + 2
    rows = []
    for i in range(count):
        spec = {**task(f"big-{i}").spec, "payload": payload}
        rows.append(task(f"big-{i}", spec_json=json.dumps(spec), spec_hash=digest(spec)))
    with leader() as conn:
        changes = mirror_tasks.upsert_tasks(conn, rows)
    assert [changes[row.uid].name for row in rows] == ["CREATED"] * count

    stored = {row.name: row for row in snapshot(engine).tasks}
    assert sorted(stored) == sorted(row.name for row in rows)
    assert all(stored[row.name].spec["payload"] == payload for row in rows)


def test_an_unchanged_spec_hash_writes_nothing(engine: Engine, leader: Leader) -> None:
    row = task("test-task")
    with leader() as conn:
        mirror.upsert_task(conn, row)
    first = updated_at(engine, row.uid)
    db_clock_passes(engine, first)

    with leader() as conn:
        assert mirror.upsert_task(conn, row) is False

    assert updated_at(engine, row.uid) == first

    edited = changed(row, handler="other")
    with leader() as conn:
        assert mirror.upsert_task(conn, edited) is True

    assert updated_at(engine, row.uid) > first
    assert snapshot(engine).tasks == [edited]


def test_an_unchanged_executor_is_not_rewritten(engine: Engine, leader: Leader) -> None:
    pool = executor("pool")
    with leader() as conn:
        assert mirror.upsert_executor(conn, pool) is True
    with leader() as conn:
        assert mirror.upsert_executor(conn, pool) is False
        moved = dataclasses.replace(pool, port=9191, spec_hash="f" * 64, generation=2)
        assert mirror.upsert_executor(conn, moved) is True
    assert snapshot(engine).executors == [moved]


def test_a_task_recreated_under_its_name_replaces_the_old_row(
    engine: Engine, leader: Leader
) -> None:
    old = task("test-task")
    new = task("test-task", uid=str(uuid.uuid4()))
    with leader() as conn:
        mirror.upsert_task(conn, old)
    with leader() as conn:
        mirror.upsert_task(conn, new)
    assert snapshot(engine).tasks == [new]


def test_a_batch_over_the_statement_limit_is_written_as_a_whole(
    engine: Engine, leader: Leader
) -> None:
    # Every statement of the batch (look-up, re-created names, inserts, references of updated
    # Tasks) is split when its list outgrows the limit; the outcome is the one of a single
    # statement each.
    pool, spare = executor("pool"), executor("spare")
    kept = [task(f"kept-{i}", "pool") for i in range(4)]
    edited = [task(f"edited-{i}", "pool") for i in range(4)]
    gone = [task(f"again-{i}", "pool") for i in range(4)]  # deleted while nobody watched
    with leader() as conn:
        mirror.upsert_executor(conn, pool)
        mirror.upsert_executor(conn, spare)
        mirror_tasks.upsert_tasks(conn, [*kept, *edited, *gone])
    again = [task(f"again-{i}", "spare", "pool") for i in range(4)]
    fresh = [task(f"fresh-{i}", "spare") for i in range(6)]
    moved = [dataclasses.replace(changed(r, handler="other"), executors=(ExecutorRef("spare"),))
             for r in edited]  # fmt: skip
    statements: list[str] = []

    def sent(*args: Any) -> None:
        statements.append(args[2])

    sa.event.listen(engine, "before_cursor_execute", sent)
    with leader() as conn:
        changes = mirror_tasks.upsert_tasks(conn, [*kept, *moved, *again, *fresh], limit=400)
    sa.event.remove(engine, "before_cursor_execute", sent)

    assert [changes[r.uid].name for r in [*kept, *moved, *again, *fresh]] == (
        ["UNCHANGED"] * 4 + ["UPDATED"] * 4 + ["CREATED"] * 10
    )
    assert sum(sql.startswith("SELECT `uid`, `spec_hash`") for sql in statements) > 1
    assert sum(sql.startswith("DELETE FROM `tasks`") for sql in statements) > 1
    assert sum(sql.startswith("INSERT INTO `tasks`") for sql in statements) > 1
    state = snapshot(engine)
    assert sorted(state.tasks, key=lambda r: r.name) == sorted(
        [*kept, *moved, *again, *fresh], key=lambda r: r.name
    )
    links = {(link.task_uid, link.executor_name, link.executor_uid) for link in state.links}
    expected = {(r.uid, "pool", pool.uid) for r in [*kept, *again]}
    expected |= {(r.uid, "spare", spare.uid) for r in [*moved, *again, *fresh]}
    assert links == expected


def test_pods_follow_the_executor_and_keep_their_health(engine: Engine, leader: Leader) -> None:
    pool = executor("pool")
    a, b, c = pod("pool-a", "10.0.0.1"), pod("pool-b", None, ready=False), pod("pool-c")
    with leader() as conn:
        mirror.upsert_executor(conn, pool)
        assert mirror.upsert_instances(conn, pool.uid, [a, b]) is True
        conn.execute(
            sa.update(schema.executor_instances)
            .where(schema.executor_instances.c.pod_uid == a.pod_uid)
            .values(healthy=True, in_flight=2)
        )
    with leader() as conn:
        assert mirror.upsert_instances(conn, pool.uid, [a, b]) is False

    b_running = dataclasses.replace(b, ip="10.0.0.2", ready=True)
    a_not_ready = dataclasses.replace(a, ready=False)
    with leader() as conn:
        assert mirror.upsert_instances(conn, pool.uid, [a_not_ready, b_running, c]) is True
        assert mirror.upsert_instances(conn, pool.uid, [b_running, c]) is True

    assert snapshot(engine).instances == {pool.uid: (b_running, c)}
    with leader() as conn:
        mirror.upsert_instances(conn, pool.uid, [a, b_running])
        health = conn.execute(
            sa.select(
                schema.executor_instances.c.healthy, schema.executor_instances.c.in_flight
            ).where(schema.executor_instances.c.pod_uid == a.pod_uid)
        ).one()
    assert tuple(health) == (None, 0), "a pod that left and came back starts unprobed"


def test_a_pod_may_belong_to_several_executors(engine: Engine, leader: Leader) -> None:
    pool, other = executor("pool"), executor("other")
    shared = pod("shared")
    with leader() as conn:
        mirror.upsert_executor(conn, pool)
        mirror.upsert_executor(conn, other)
        mirror.upsert_instances(conn, pool.uid, [shared])
        mirror.upsert_instances(conn, other.uid, [shared])
    with leader() as conn:
        mirror.delete_executor(conn, pool.uid)
    assert snapshot(engine).instances == {other.uid: (shared,)}


# -- executor references -----------------------------------------------------------------------


def test_missing_executors_are_visible_and_resolve_when_they_appear(
    engine: Engine, leader: Leader
) -> None:
    pool = executor("pool")
    row = task("test-task", "pool", "spare")
    with leader() as conn:
        mirror.upsert_executor(conn, pool)
        mirror.upsert_task(conn, row)

    assert [(x.executor_name, x.executor_uid) for x in snapshot(engine).links] == [
        ("pool", pool.uid),
        ("spare", None),
    ]
    assert missing(engine, row.uid) == ["spare"]

    elsewhere = executor("spare", namespace="other-ns")
    spare = executor("spare")
    with leader() as conn:
        mirror.upsert_executor(conn, elsewhere)
    assert missing(engine, row.uid) == ["spare"], "an Executor of another namespace does not count"
    with leader() as conn:
        mirror.upsert_executor(conn, spare)
    assert missing(engine, row.uid) == []
    assert [x.executor_uid for x in snapshot(engine).links] == [pool.uid, spare.uid]

    with leader() as conn:
        assert mirror.delete_executor(conn, pool.uid) is True
        assert mirror.delete_executor(conn, pool.uid) is False
    assert missing(engine, row.uid) == ["pool"]
    assert [x.executor_uid for x in snapshot(engine).links] == [None, spare.uid]


def test_resolving_reports_the_tasks_whose_missing_executors_changed(
    engine: Engine, leader: Leader
) -> None:
    row, other = task("a", "pool"), task("b", "elsewhere")
    with leader() as conn:
        mirror.upsert_task(conn, row)
        mirror.upsert_task(conn, other)
        assert mirror.resolve_executor_refs(conn, "ns") == []
        conn.execute(
            sa.insert(schema.executors).values(
                uid=str(uuid.uuid4()),
                namespace="ns",
                name="pool",
                selector={},
                port=9090,
                scheme="http",
                spec={},
                spec_hash="0" * 64,
                generation=1,
                created_at=datetime.now(UTC),
                updated_at=datetime.now(UTC),
            )
        )
        assert mirror.resolve_executor_refs(conn, "ns") == [row.uid]
    assert missing(engine, row.uid) == []
    assert missing(engine, other.uid) == ["elsewhere"]


def test_references_of_an_unmirrored_task_are_refused(leader: Leader) -> None:
    with pytest.raises(LookupError, match="not in the mirror"), leader() as conn:
        mirror.replace_task_executors(conn, TaskUid(str(uuid.uuid4())), [])


# -- deletes -----------------------------------------------------------------------------------


def test_deleting_a_task_keeps_its_execution_history(engine: Engine, leader: Leader) -> None:
    pool = executor("pool")
    row = task("test-task", "pool")
    tick = datetime(2025, 1, 9, 1, 41, 50, tzinfo=UTC)
    with leader() as conn:
        mirror.upsert_executor(conn, pool)
        mirror.upsert_task(conn, row)
        run = executions.claim_tick(
            conn, row.uid, row.namespace, row.name, tick, executions.Origin.SCHEDULE, epoch=Epoch(1)
        )
        conn.execute(
            sa.insert(schema.load_balance_state).values(
                task_uid=row.uid,
                strategy="RoundRobin",
                state={"cursor": 3},
                epoch=1,
                updated_at=datetime.now(UTC),
            )
        )
    assert run is not None

    with leader() as conn:
        assert mirror.delete_task(conn, row.uid) is True
        assert mirror.delete_task(conn, row.uid) is False

    state = snapshot(engine)
    assert (state.tasks, state.links, state.executors) == ([], [], [pool])
    with engine.connect() as conn:
        balancers = conn.execute(sa.select(sa.func.count()).select_from(schema.load_balance_state))
        assert balancers.scalar_one() == 0
    kept = executions.get_execution(engine, run)
    assert kept is not None and (kept.task_uid, kept.scheduled_at) == (row.uid, tick)


# -- resync ------------------------------------------------------------------------------------


def test_resync_makes_the_mirror_equal_to_the_snapshot(engine: Engine, leader: Leader) -> None:
    kept_exec, gone_exec, renamed_exec = executor("pool"), executor("old"), executor("spare")
    kept_task, edited_task, gone_task = task("a", "pool"), task("b", "spare"), task("c", "old")
    with leader() as conn:
        for e in (kept_exec, gone_exec, renamed_exec):
            mirror.upsert_executor(conn, e)
        for t in (kept_task, edited_task, gone_task):
            mirror.upsert_task(conn, t)
        mirror.upsert_instances(conn, kept_exec.uid, [pod("pool-a"), pod("pool-b")])
        mirror.upsert_instances(conn, gone_exec.uid, [pod("old-a")])

    # Meanwhile (no leader watching): "spare" deleted and created again, "old" and "c" deleted,
    # "b" edited, "d" and "new" created, pool-b replaced by pool-c.
    respawned = executor("spare")
    new_exec = executor("new", port=8080)
    edited = changed(edited_task, handler="other")
    created = task("d", "new", "nowhere")
    pods = {kept_exec.uid: (pod("pool-a"), pod("pool-c")), new_exec.uid: (pod("new-a"),)}
    with leader() as conn:
        counts = mirror.resync(
            conn, [kept_task, edited, created], [kept_exec, respawned, new_exec], pods
        )

    state = snapshot(engine)
    assert state.tasks == [kept_task, edited, created]
    # Rows compare by spec_hash; the stored spec is the one written.
    assert [t.spec for t in state.tasks] == [t.spec for t in (kept_task, edited, created)]
    assert state.executors == [new_exec, kept_exec, respawned]
    assert state.instances == {
        uid: tuple(sorted(p, key=lambda x: x.pod_name)) for uid, p in pods.items()
    }
    resolved = {(x.task_uid, x.executor_name): x.executor_uid for x in state.links}
    assert resolved == {
        (kept_task.uid, "pool"): kept_exec.uid,
        (edited.uid, "spare"): respawned.uid,
        (created.uid, "new"): new_exec.uid,
        (created.uid, "nowhere"): None,
    }
    assert missing(engine, created.uid) == ["nowhere"]
    assert counts == ResyncCounts(created=3, updated=3, deleted=3)

    with leader() as conn:
        again = mirror.resync(
            conn, [kept_task, edited, created], [kept_exec, respawned, new_exec], pods
        )
    assert again == ResyncCounts()
    assert snapshot(engine) == state


def test_resync_to_an_empty_snapshot_empties_the_mirror(engine: Engine, leader: Leader) -> None:
    pool = executor("pool")
    with leader() as conn:
        mirror.upsert_executor(conn, pool)
        mirror.upsert_task(conn, task("a", "pool"))
        mirror.upsert_instances(conn, pool.uid, [pod("pool-a")])
    with leader() as conn:
        mirror.resync(conn, [], [], {})
    assert snapshot(engine) == Mirror([], [], {}, [])


def test_resync_refuses_pods_of_an_executor_it_was_not_given(leader: Leader) -> None:
    with pytest.raises(ValueError, match="not in the snapshot"), leader() as conn:
        mirror.resync(conn, [], [], {"some-uid": [pod("x")]})


# -- refused writes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda row: changed(row, handler="h" * 254), id="value-too-long"),
        pytest.param(
            lambda row: dataclasses.replace(
                changed(row, handler="x"),
                executors=(ExecutorRef("pool"), ExecutorRef("pool")),
            ),
            id="duplicate-executor-name",
        ),
        pytest.param(
            lambda row: changed(row, handler="x", cron_expression=None), id="missing-schedule"
        ),
    ],
)
def test_a_refused_write_leaves_the_previous_rows(
    engine: Engine, leader: Leader, bad: Callable[[TaskRow], TaskRow]
) -> None:
    pool = executor("pool")
    row = task("test-task", "pool")
    with leader() as conn:
        mirror.upsert_executor(conn, pool)
        mirror.upsert_task(conn, row)
    before = snapshot(engine)

    with pytest.raises(sa.exc.DBAPIError), leader() as conn:
        mirror.upsert_executor(conn, executor("other"))
        mirror.upsert_task(conn, bad(row))

    assert snapshot(engine) == before


def test_a_fenced_leader_changes_nothing(
    engine: Engine, leader: Leader, bump: Callable[[], Epoch]
) -> None:
    row = task("test-task")
    with leader() as conn:
        mirror.upsert_task(conn, row)
    before = snapshot(engine)
    bump()

    with pytest.raises(fencing.Fenced), leader() as conn:
        mirror.resync(conn, [], [], {})

    assert snapshot(engine) == before

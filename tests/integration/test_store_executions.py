"""Execution rows: each tick or trigger is claimed once, across leaders; history is paged by id,
newest first, with filters."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

from cadenza.core.ids import Epoch, ExecutionId, TaskUid
from cadenza.core.transitions import RunStatus
from cadenza.devenv import mariadb
from cadenza.store import executions, fencing

pytestmark = pytest.mark.mariadb

LOCK = "cadenza-leader"
TICK = datetime(2025, 1, 9, 1, 41, 50, tzinfo=UTC)
SCHEDULE = executions.Origin.SCHEDULE
Leader = Callable[[], AbstractContextManager[Connection]]


@pytest.fixture
def epochs(mariadb_server: mariadb.Server, database: str) -> Iterator[Callable[[str], Epoch]]:
    """Takes the lead for a replica: bumps the epoch as the leader lock's session does."""
    session = mariadb_server.connect(make_url(database).database)

    def bump(instance: str) -> Epoch:
        with session.cursor() as cur:
            cur.execute(fencing.BUMP_EPOCH_SQL, (LOCK, instance))
            cur.execute("SELECT epoch FROM leader_epochs WHERE lock_name = %s", (LOCK,))
            row = cur.fetchone()
        assert row is not None
        return Epoch(int(row[0]))

    yield bump
    session.close()


def leader_of(engine: Engine, epoch: Epoch) -> Leader:
    return lambda: fencing.leader_transaction(engine, LOCK, epoch)


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT COUNT(*) FROM task_executions").scalar_one())


def test_a_tick_is_claimed_once_across_leaders(
    engine: Engine, epochs: Callable[[str], Epoch]
) -> None:
    uid = TaskUid(str(uuid.uuid4()))
    first = epochs("replica-a")
    with leader_of(engine, first)() as conn:
        run = executions.claim_tick(conn, uid, "ns", "test-task", TICK, SCHEDULE, epoch=first)
    second = epochs("replica-b")
    with leader_of(engine, second)() as conn:
        again = executions.claim_tick(
            conn, uid, "ns", "test-task", TICK, executions.Origin.MISFIRE, epoch=second
        )
        # The duplicate does not spoil the transaction: the next tick is claimed in it.
        following = executions.claim_tick(
            conn, uid, "ns", "test-task", TICK + timedelta(seconds=10), SCHEDULE, epoch=second
        )

    assert run is not None and following is not None
    assert again is None
    assert count(engine) == 2
    claimed = executions.get_execution(engine, run)
    assert claimed is not None
    assert (claimed.scheduled_at, claimed.epoch, claimed.status, claimed.attempt) == (
        TICK,
        first,
        RunStatus.CLAIMED,
        1,
    )
    assert claimed.origin is SCHEDULE
    assert claimed.requested_at.tzinfo is UTC


def test_a_manual_trigger_is_claimed_once_per_key(
    engine: Engine, epochs: Callable[[str], Epoch]
) -> None:
    uid = TaskUid(str(uuid.uuid4()))
    epoch = epochs("replica-a")
    manual = executions.Origin.MANUAL
    with leader_of(engine, epoch)() as conn:
        runs = [
            executions.claim_tick(
                conn, uid, "ns", "t", None, manual, epoch=epoch, trigger_key="1736386910"
            ),
            executions.claim_tick(
                conn, uid, "ns", "t", None, manual, epoch=epoch, trigger_key="1736386910"
            ),
            executions.claim_tick(
                conn, uid, "ns", "t", None, manual, epoch=epoch, trigger_key="1736386999"
            ),
            executions.claim_tick(conn, uid, "ns", "t", None, executions.Origin.API, epoch=epoch),
            executions.claim_tick(conn, uid, "ns", "t", None, executions.Origin.API, epoch=epoch),
        ]
    assert [run is not None for run in runs] == [True, False, True, True, True]


@pytest.mark.parametrize("ids_in_a_row", [True, False])
def test_a_claimed_batch_gets_the_ids_of_its_own_rows(
    engine: Engine, epochs: Callable[[str], Epoch], ids_in_a_row: bool
) -> None:
    """The ids of one multi-row insert follow one another where the server says they do
    (``innodb_autoinc_lock_mode`` 0 or 1, here); where they may not (mode 2, MySQL 8's default)
    they are read back by their keys. Both ways, each id is the row of its own tick."""
    epoch = epochs("replica-a")
    uids = [TaskUid(str(uuid.uuid4())) for _ in range(5)]
    claims = [
        executions.NewClaim(uid, "ns", f"task-{n}", TICK + timedelta(seconds=n), SCHEDULE,
                            RunStatus.CLAIMED, max_attempts=n + 1)
        for n, uid in enumerate(uids)
    ]  # fmt: skip
    with engine.begin() as conn:  # a gap in the ids before the batch
        conn.exec_driver_sql("ALTER TABLE task_executions AUTO_INCREMENT = 1000")
    with leader_of(engine, epoch)() as conn:
        if not ids_in_a_row:
            conn.info["cadenza_id_step"] = None
        runs = executions.claim_many(conn, claims, epoch)
        del conn.info["cadenza_id_step"]
    for n, run in enumerate(runs):
        assert run is not None
        row = executions.get_execution(engine, run)
        assert row is not None
        assert (row.task_uid, row.task_name, row.scheduled_at, row.max_attempts) == (
            uids[n],
            f"task-{n}",
            TICK + timedelta(seconds=n),
            n + 1,
        )


def test_a_scheduled_run_needs_its_tick(engine: Engine, epochs: Callable[[str], Epoch]) -> None:
    epoch = epochs("replica-a")
    with pytest.raises(ValueError, match="needs its tick"), leader_of(engine, epoch)() as conn:
        executions.claim_tick(conn, TaskUid("u"), "ns", "t", None, SCHEDULE, epoch=epoch)


def test_an_unknown_execution_is_none(engine: Engine) -> None:
    assert executions.get_execution(engine, ExecutionId(12345)) is None


def test_history_pages_newest_first_by_id(engine: Engine, epochs: Callable[[str], Epoch]) -> None:
    epoch = epochs("replica-a")
    a, b = TaskUid(str(uuid.uuid4())), TaskUid(str(uuid.uuid4()))
    ids: dict[str, list[ExecutionId]] = {"a": [], "b": [], "skipped": []}
    with leader_of(engine, epoch)() as conn:
        for i in range(7):
            for key, uid, name, namespace in (("a", a, "task-a", "ns"), ("b", b, "task-b", "ns2")):
                status = RunStatus.SKIPPED if key == "a" and i % 3 == 0 else RunStatus.CLAIMED
                run = executions.claim_tick(
                    conn,
                    uid,
                    namespace,
                    name,
                    TICK + timedelta(seconds=10 * i),
                    SCHEDULE,
                    epoch=epoch,
                    status=status,
                )
                assert run is not None
                ids[key].append(run)
                if status is RunStatus.SKIPPED:
                    ids["skipped"].append(run)

    def pages(**filters: object) -> list[list[ExecutionId]]:
        seen, after = [], None
        while True:
            page = executions.history(engine, after_id=after, limit=3, **filters)  # type: ignore[arg-type]
            seen.append([run.id for run in page.executions])
            if page.next_after_id is None:
                return seen
            after = page.next_after_id

    everything = sorted(ids["a"] + ids["b"], reverse=True)
    assert pages() == [everything[i : i + 3] for i in range(0, 14, 3)]
    newest_a = sorted(ids["a"], reverse=True)
    assert pages(namespace="ns", task_name="task-a") == [newest_a[:3], newest_a[3:6], newest_a[6:]]
    assert pages(task_uid=b) == [sorted(ids["b"], reverse=True)[i : i + 3] for i in (0, 3, 6)]
    assert pages(status=RunStatus.SKIPPED) == [sorted(ids["skipped"], reverse=True)]
    assert pages(namespace="ns2", status=RunStatus.SKIPPED) == [[]]

    exact = executions.history(engine, namespace="ns", limit=7)
    assert exact.next_after_id is None and len(exact.executions) == 7


def test_history_refuses_bad_arguments(engine: Engine) -> None:
    with pytest.raises(ValueError, match="limit"):
        executions.history(engine, limit=0)
    with pytest.raises(ValueError, match="namespace"):
        executions.history(engine, task_name="task-a")


def test_history_by_task_can_use_its_index(engine: Engine) -> None:
    """The query history() builds for one Task has an index to use as the table grows."""
    with engine.connect() as conn:
        plan = (
            conn.execute(
                sa.text(
                    "EXPLAIN SELECT * FROM task_executions WHERE namespace = 'ns' "
                    "AND task_name = 't' AND id < 100 ORDER BY id DESC LIMIT 51"
                )
            )
            .mappings()
            .one()
        )
    assert "ix_task_executions_namespace_task_name_id" in plan["possible_keys"].split(",")

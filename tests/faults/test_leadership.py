"""Leader election under faults, with three real operator processes on one MariaDB.

Every test checks observable state: the replicas' /readyz, the ``scheduler_instances`` and
``leader_epochs`` rows, and the lock as the database server sees it.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cadenza.devenv.controlplane import ControlPlane
from tests.support import db, wait_for
from tests.support.operators import Replicas, replicas

pytestmark = pytest.mark.usefixtures("crds")


def _epoch(group: Replicas) -> int:
    rows = db.rows(
        group.database_url,
        "SELECT epoch FROM leader_epochs WHERE lock_name = %s",
        f"cadenza.test.{group.namespace}",
    )
    return int(rows[0][0]) if rows else 0


def _roles(group: Replicas) -> dict[str, tuple[str, object]]:
    rows = db.rows(group.database_url, "SELECT instance_id, role, epoch FROM scheduler_instances")
    return {str(r[0]): (str(r[1]), r[2]) for r in rows}


@pytest.fixture
def three(
    controlplane: ControlPlane, database: str, namespace: str, tmp_path: Path
) -> Iterator[Replicas]:
    with replicas(controlplane, database, namespace, tmp_path, count=3) as group:
        group.wait_indexed()
        yield group


def test_exactly_one_leader_and_the_others_stand_by(three: Replicas) -> None:
    leader = three.wait_for_leader()
    for _ in range(10):
        assert three.leaders() == [leader]
        time.sleep(0.2)
    roles = wait_for(
        lambda: (
            (r := _roles(three))
            and sorted(v[0] for v in r.values()) == ["leader", "standby", "standby"]
            and r
        ),
        30,
        "registry shows one leader and two standbys",
    )
    assert roles[leader.instance_id] == ("leader", _epoch(three))
    replicas_view = three.members[0].get("/api/v1/replicas")
    assert replicas_view["leader"]["instance_id"] == leader.instance_id


def test_kill_9_of_the_leader_hands_over(three: Replicas) -> None:
    leader = three.wait_for_leader()
    epoch = _epoch(three)
    started = time.monotonic()
    leader.signal(signal.SIGKILL)
    successor = three.wait_for_leader(exclude=leader)
    takeover = time.monotonic() - started
    print(f"takeover after kill -9 of the leader: {takeover:.2f}s")
    assert successor is not leader
    assert _epoch(three) == epoch + 1
    # The dead leader never wrote its row back: the registry must not keep saying it leads.
    wait_for(
        lambda: (
            [i for i, (role, _) in _roles(three).items() if role == "leader"]
            == [successor.instance_id]
        ),
        30,
        "the registry to name the successor as the only leader",
    )


def _apply_task(group: Replicas, schedule: str) -> None:
    task = {
        "apiVersion": "cadenza.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": "probe"},
        "spec": {"schedule": schedule, "executors": [{"name": "pool"}]},
    }
    group.plane.kubectl("apply", "-n", group.namespace, "-f", "-", input=json.dumps(task))


def _mirrored_schedule(group: Replicas) -> object:
    rows = db.rows(
        group.database_url, "SELECT cron_expression, epoch FROM tasks WHERE name='probe'"
    )
    return rows[0] if rows else None


def test_a_frozen_leader_is_fenced_and_steps_down(three: Replicas) -> None:
    leader = three.wait_for_leader()
    old_epoch = _epoch(three)
    _apply_task(three, "@hourly")
    wait_for(lambda: _mirrored_schedule(three) == ("@hourly", old_epoch), 30, "the first write")
    leader.signal(signal.SIGSTOP)
    # Something for the frozen leader to write the moment it resumes.
    _apply_task(three, "@daily")
    started = time.monotonic()
    successor = three.wait_for_leader(timeout=3 * three.lease_seconds + 30, exclude=leader)
    print(f"takeover after SIGSTOP of the leader: {time.monotonic() - started:.2f}s")
    new_epoch = _epoch(three)
    assert new_epoch > old_epoch
    wait_for(
        lambda: _mirrored_schedule(three) == ("@daily", new_epoch),
        30,
        "the successor to mirror the change",
    )
    leader.signal(signal.SIGCONT)
    _apply_task(three, "@weekly")
    # The resumed replica learns it lost the lock and reports standby; nobody else changed.
    wait_for(
        lambda: (leader.readyz() or {}).get("leading") is False,
        30,
        "the resumed replica to step down",
    )
    assert three.leaders() == [successor]
    assert _epoch(three) == new_epoch
    wait_for(
        lambda: _mirrored_schedule(three) == ("@weekly", new_epoch),
        30,
        "the successor to mirror the change made after the resume",
    )
    # No row carries the old epoch after the takeover: its writes were refused or never sent.
    stale = db.rows(
        three.database_url,
        "SELECT COUNT(*) FROM tasks WHERE epoch = %s AND updated_at > "
        "(SELECT acquired_at FROM leader_epochs WHERE lock_name = %s)",
        old_epoch,
        f"cadenza.test.{three.namespace}",
    )
    assert stale[0][0] == 0


def test_killing_the_lock_session_makes_the_leader_step_down(three: Replicas) -> None:
    leader = three.wait_for_leader()
    epoch = _epoch(three)
    lock = f"cadenza.test.{three.namespace}"
    session = db.rows(three.database_url, "SELECT IS_USED_LOCK(%s)", lock)[0][0]
    assert session is not None
    db.rows(three.database_url, f"KILL {int(session)}")
    wait_for(lambda: _epoch(three) > epoch, 30, "a new epoch after the lock session died")
    # Whoever leads now holds the lock on a new session; the killed one is gone for good.
    new_session = wait_for(
        lambda: db.rows(three.database_url, "SELECT IS_USED_LOCK(%s)", lock)[0][0],
        30,
        "the lock to be held again",
    )
    assert new_session != session
    current = three.wait_for_leader()
    state = current.readyz() or {}
    assert state.get("epoch") == _epoch(three)
    if current is leader:
        # It re-acquired on a fresh connection with a fresh epoch: its old work was stopped.
        assert state["epoch"] > epoch


def test_sigterm_releases_the_lock_at_once_even_if_the_shutdown_hangs(three: Replicas) -> None:
    leader = three.wait_for_leader()
    lock = f"cadenza.test.{three.namespace}"
    session = db.scalar(three.database_url, "SELECT IS_USED_LOCK(%s)", lock)
    # Hang the rest of the leader's shutdown: its last steps write its own registry row, which
    # this transaction holds.
    holder = db.connect(three.database_url, autocommit=False)
    try:
        with holder.cursor() as cur:
            cur.execute(
                "SELECT * FROM scheduler_instances WHERE instance_id = %s FOR UPDATE",
                (leader.instance_id,),
            )
        started = time.monotonic()
        leader.signal(signal.SIGTERM)
        # The release takes milliseconds; before it came first, it waited for kopf to wind down
        # (5 s and more). The deadline leaves room for a loaded machine.
        wait_for(
            lambda: db.scalar(three.database_url, "SELECT IS_USED_LOCK(%s)", lock) != session,
            3,
            "the old leader to release the lock",
        )
        print(f"lock released {time.monotonic() - started:.2f}s after SIGTERM")
        successor = three.wait_for_leader(exclude=leader)
        assert successor is not leader
        assert leader.alive(), "the shutdown was meant to hang on the held row"
    finally:
        holder.rollback()
        holder.close()
    wait_for(lambda: not leader.alive(), 60, "the old leader to exit once its row is free")

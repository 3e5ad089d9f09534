"""The fault suite: faults injected into the leader while a hundred Tasks fire every second,
each scenario checked against what the pods really ran (:mod:`tests.support.ledger`): no tick
twice, none lost, none left open past its deadline, every result the pods produced recorded.

Prints the table ``docs/reliability.md`` keeps. Each scenario is bounded in time (its waits
have deadlines); the whole suite takes about three minutes here.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cadenza.devenv.controlplane import ControlPlane
from tests.support import db, wait_for
from tests.support.ledger import HEADER, OPEN, Verdict, check
from tests.support.operators import OperatorProcess
from tests.support.scenario import Scenario, executor, scenario, task

pytestmark = pytest.mark.usefixtures("crds")

TASKS = 100
NAMES = [f"load-{i:03d}" for i in range(TASKS)]
AFTER_RECOVERY = timedelta(seconds=5)


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@pytest.fixture
def loaded(
    controlplane: ControlPlane, database: str, namespace: str, tmp_path: Path
) -> Iterator[Scenario]:
    with scenario(controlplane, database, namespace, tmp_path, replicas=2) as scene:
        scene.add_pods("pool", 3, max_concurrency=64)
        spec = {
            "timeoutSeconds": 5,
            "retry": {"maxAttempts": 1},
            "misfirePolicy": "FireAll",
            "maxMisfireRuns": 100,
            "startingDeadlineSeconds": 120,
        }
        scene.apply(executor("pool"), *(task(n, "* * * * * *", **spec) for n in NAMES))
        wait_for(lambda: _flowing(scene), 120, f"{TASKS} Tasks firing every second")
        yield scene


def _flowing(scene: Scenario) -> bool:
    """Every Task ran in the last few seconds."""
    recent = scene.sql(
        "SELECT COUNT(DISTINCT task_name) AS n FROM task_executions WHERE namespace = %s"
        " AND status = 'succeeded' AND scheduled_at > %s",
        scene.namespace,
        now() - timedelta(seconds=4),
    )
    return int(recent[0]["n"]) == TASKS


def _epoch(scene: Scenario) -> int:
    return int(
        db.scalar(
            scene.database_url,
            "SELECT epoch FROM leader_epochs WHERE lock_name = %s",
            f"cadenza.test.{scene.namespace}",
        )
        or 0
    )


def _dispatched_under(scene: Scenario, epoch: int) -> bool:
    """A pod ran a run that a leader of ``epoch`` or later sent."""
    return any(int(e.get("epoch") or 0) >= epoch for e in scene.ledger()[-400:])


def _kill_9(scene: Scenario, leader: OperatorProcess) -> None:
    leader.signal(signal.SIGKILL)
    scene.replicas.wait_for_leader(timeout=30, exclude=leader)
    scene.replicas.add()  # two replicas again for the next scenario


def _sigstop_past_the_lease(scene: Scenario, leader: OperatorProcess) -> None:
    epoch = _epoch(scene)
    leader.signal(signal.SIGSTOP)
    try:
        wait_for(lambda: _epoch(scene) > epoch, 3 * scene.replicas.lease_seconds + 30, "takeover")
    finally:
        leader.signal(signal.SIGCONT)
    wait_for(lambda: not leader.leading(), 30, "the resumed replica to step down")


def _kill_the_lock_session(scene: Scenario, leader: OperatorProcess) -> None:
    epoch = _epoch(scene)
    lock = f"cadenza.test.{scene.namespace}"
    session = db.scalar(scene.database_url, "SELECT IS_USED_LOCK(%s)", lock)
    db.rows(scene.database_url, f"KILL {int(session)}")
    wait_for(lambda: _epoch(scene) > epoch, 30, "a new epoch after the lock session died")


SCENARIOS: list[tuple[str, Callable[[Scenario, OperatorProcess], None]]] = [
    ("kill -9 of the leader", _kill_9),
    ("SIGSTOP of the leader past the lease, then SIGCONT", _sigstop_past_the_lease),
    ("KILL of the leader's lock session on the server", _kill_the_lock_session),
]


def _run(scene: Scenario, name: str, fault: Callable[[Scenario, OperatorProcess], None]) -> Verdict:
    wait_for(lambda: _flowing(scene), 60, "every Task firing before the fault")
    leader = scene.leader()
    start = now()
    injected = time.monotonic()
    fault(scene, leader)
    epoch = _epoch(scene)
    wait_for(lambda: _dispatched_under(scene, epoch), 60, "a run sent by the new leader")
    recovery = time.monotonic() - injected
    end = now() + AFTER_RECOVERY
    wait_for(
        lambda: (
            now() > end
            and not scene.sql(
                "SELECT id FROM task_executions WHERE namespace = %s AND scheduled_at <= %s"
                " AND status IN %s LIMIT 1",
                scene.namespace,
                end,
                OPEN,
            )
        ),
        90,
        "every run up to the end of the window to finish",
    )
    return check(scene, NAMES, start, end, Verdict(name, recovery_seconds=recovery))


def test_faults_under_load_lose_and_repeat_nothing(loaded: Scenario) -> None:
    verdicts = [_run(loaded, name, fault) for name, fault in SCENARIOS]
    print("\n" + HEADER + "\n" + "\n".join(v.row() for v in verdicts))
    for verdict in verdicts:
        assert verdict.clean, (
            verdict.scenario,
            verdict.duplicates[:5],
            verdict.lost[:5],
            verdict.stuck[:5],
            verdict.unrecorded[:5],
        )

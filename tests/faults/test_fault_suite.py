"""The fault suite: faults injected into every part of a Cadenza (the leader, its database,
the API server, executor pods, the callback path) while a hundred Tasks fire every second, each
scenario checked against what the pods really ran (:mod:`tests.support.ledger`): no tick twice,
none lost, none left open past its deadline, none started after it, every result the pods
produced recorded.

The stack runs on a MariaDB of its own (one scenario crashes it), one scenario runs a replica
under libfaketime (its clock 30 s ahead), and the sidecars reach the replicas through a Service
in the test process (:mod:`tests.support.chaos`) that a scenario can make duplicate, reorder,
delay and hold callbacks. After the last scenario every Task's status must agree with its
history. Prints the table ``docs/reliability.md`` keeps. Each scenario is bounded in time (its
waits have deadlines); the whole suite takes about three minutes here.
"""

from __future__ import annotations

import collections
import glob
import json
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cadenza.devenv import mariadb
from cadenza.devenv.controlplane import ControlPlane
from cadenza.devenv.mariadb import PrivateServer
from cadenza.devenv.pods import SidecarPod
from tests.support import db, wait_for
from tests.support.chaos import CallbackService, faults
from tests.support.ledger import HEADER, OPEN, Verdict, check, naive
from tests.support.operators import OperatorProcess
from tests.support.scenario import Scenario, executor, scenario, task

pytestmark = pytest.mark.usefixtures("crds")

TASKS = 100
NAMES = [f"load-{i:03d}" for i in range(TASKS)]
AFTER_RECOVERY = timedelta(seconds=5)
SPEC = {
    "timeoutSeconds": 5,
    "retry": {"maxAttempts": 1},
    "misfirePolicy": "FireAll",
    "maxMisfireRuns": 100,
    "startingDeadlineSeconds": 120,
}
DOWN_SECONDS = 3
"""How long a restarted MariaDB or kube-apiserver stays down."""
RECOVERY_DEADLINE = 90
"""Seconds a scenario may take to recover before the suite fails (an API server restart alone
takes 10-15 s on a loaded 2-core machine)."""


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class Stack:
    """The loaded scene, the private MariaDB it runs on, and the pods a fault killed."""

    scene: Scenario
    mariadb: PrivateServer
    callbacks: CallbackService
    dead_pods: set[str] = field(default_factory=set)
    probes: list[str] = field(default_factory=list)
    """Tasks a scenario made to see the system recover (they fire every second too)."""


@pytest.fixture
def loaded(controlplane: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[Stack]:
    # A MariaDB of its own, so that one scenario can crash it without touching other suites;
    # callbacks reach the replicas through a Service the suite can make misbehave.
    scenes: list[Scenario] = []

    def replicas() -> list[str]:
        return [m.url for m in scenes[0].replicas.members if m.alive()] if scenes else []

    with (
        mariadb.private_server() as server,
        mariadb.scratch_database(server.server) as name,
        CallbackService(replicas) as service,
        scenario(
            controlplane, server.server.url(name), namespace, tmp_path, replicas=2,
            CADENZA_HTTP_ADVERTISE_URL=service.url,
        ) as scene,
    ):  # fmt: skip
        scenes.append(scene)
        scene.add_pods("pool", 3, max_concurrency=64)
        scene.apply(executor("pool"), *(task(n, "* * * * * *", **SPEC) for n in NAMES))
        wait_for(lambda: _flowing(scene), 120, f"{TASKS} Tasks firing every second")
        yield Stack(scene, server, service)


def _flowing(scene: Scenario) -> bool:
    """Every loaded Task ran in the last few seconds."""
    recent = scene.sql(
        "SELECT COUNT(DISTINCT task_name) AS n FROM task_executions WHERE namespace = %s"
        " AND task_name LIKE 'load-%%' AND status = 'succeeded' AND scheduled_at > %s",
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


Recovered = Callable[[], bool]
"""Whether the system is back to normal after a fault (the recovery time ends when it is)."""


def _new_leader_sends(scene: Scenario) -> Recovered:
    epoch = _epoch(scene)
    return lambda: _dispatched_under(scene, epoch)


def _kill_9(stack: Stack, leader: OperatorProcess) -> Recovered:
    leader.signal(signal.SIGKILL)
    stack.scene.replicas.wait_for_leader(timeout=30, exclude=leader)
    stack.scene.replicas.add()  # two replicas again for the next scenario
    return _new_leader_sends(stack.scene)


def _sigstop_past_the_lease(stack: Stack, leader: OperatorProcess) -> Recovered:
    scene = stack.scene
    epoch = _epoch(scene)
    leader.signal(signal.SIGSTOP)
    try:
        wait_for(lambda: _epoch(scene) > epoch, 3 * scene.replicas.lease_seconds + 30, "takeover")
    finally:
        leader.signal(signal.SIGCONT)
    wait_for(lambda: not leader.leading(), 30, "the resumed replica to step down")
    return _new_leader_sends(scene)


def _kill_the_lock_session(stack: Stack, leader: OperatorProcess) -> Recovered:
    scene = stack.scene
    epoch = _epoch(scene)
    lock = f"cadenza.test.{scene.namespace}"
    session = db.scalar(scene.database_url, "SELECT IS_USED_LOCK(%s)", lock)
    db.rows(scene.database_url, f"KILL {int(session)}")
    wait_for(lambda: _epoch(scene) > epoch, 30, "a new epoch after the lock session died")
    return _new_leader_sends(scene)


def _mariadb_crash(stack: Stack, leader: OperatorProcess) -> Recovered:
    """Runs are in flight and callbacks arrive while the server is gone: the leader loses its
    lock with its connection, callbacks are refused and re-sent by the sidecars."""
    scene = stack.scene
    epoch = _epoch(scene)
    stack.mariadb.restart(down_seconds=DOWN_SECONDS)
    wait_for(lambda: _epoch(scene) > epoch, 60, "a new epoch after MariaDB came back")
    return _new_leader_sends(scene)


def _apiserver_restart(stack: Stack, leader: OperatorProcess) -> Recovered:
    """The leader keeps firing from what it knows; once the API server is back, its watches
    resume: a Task made after the restart fires, and status writes land again."""
    scene = stack.scene
    scene.plane.restart_apiserver(down_seconds=DOWN_SECONDS)
    back = now()
    probe = f"after-restart-{len(stack.dead_pods)}-{int(time.time())}"
    stack.probes.append(probe)
    scene.apply(task(probe, "* * * * * *", **SPEC))

    def resumed() -> bool:
        if not scene.sql(
            "SELECT id FROM task_executions WHERE namespace = %s AND task_name = %s"
            " AND status = 'succeeded' LIMIT 1",
            scene.namespace,
            probe,
        ):
            print(f"not yet: no run of {probe} succeeded")
            return False
        last = scene.task_status(NAMES[0]).get("lastScheduleTime")
        if last and datetime.fromisoformat(last.replace("Z", "+00:00")) > back.replace(tzinfo=UTC):
            return True
        print(f"not yet: the status of {NAMES[0]} says its last tick was {last}")
        return False

    return resumed


def _pod_deleted_mid_run(stack: Stack, leader: OperatorProcess) -> Recovered:
    """The pod's sidecar and app are killed (-9) with runs in flight, and the Pod object is
    deleted, as when a node dies; a new pod takes its place."""
    scene = stack.scene
    victim = _live_pods(stack)[0]
    victim.kill_processes()
    stack.dead_pods.add(victim.name)
    scene.plane.kubectl(
        "delete", "pod", victim.name, "-n", scene.namespace, "--grace-period=0", "--force"
    )
    (spare,) = scene.add_pods("pool", 1, prefix="spare", max_concurrency=64)
    return lambda: bool(scene.ledger(spare.name))


def _hung_sidecar(stack: Stack, leader: OperatorProcess) -> Recovered:
    """SIGSTOP of a sidecar past its health threshold and past its runs' deadlines, then
    SIGCONT: its runs are given up (``lost``) and corrected by the late results it then sends;
    it is dispatched to again once its probes pass."""
    scene = stack.scene
    victim = _live_pods(stack)[-1]
    victim.signal_sidecar(signal.SIGSTOP)
    stopped = now()
    try:
        deadline = SPEC["timeoutSeconds"] + 2 * 2  # the run's timeout and the deadline grace
        wait_for(lambda: now() > stopped + timedelta(seconds=deadline), 30, "the deadlines")
    finally:
        victim.signal_sidecar(signal.SIGCONT)
    resumed = now()
    return lambda: any(naive(e["time"]) > resumed for e in scene.ledger(victim.name))


def _bad_callbacks(stack: Stack, leader: OperatorProcess) -> Recovered:
    """For ten seconds every callback is sent twice at once, held back a random time up to a
    second (so a run's reports overtake each other), and sent once more five seconds later."""
    began = time.monotonic()
    with faults(stack.callbacks, duplicate=True, jitter_seconds=1.0, late_copy_seconds=5.0):
        wait_for(lambda: time.monotonic() > began + 10, 20, "ten seconds of bad callbacks")
    copies = stack.callbacks.copies
    return lambda: stack.callbacks.copies > copies  # the last late copies arrived too


def _callback_storm(stack: Stack, leader: OperatorProcess) -> Recovered:
    """Every sidecar's callbacks are held back past the runs' deadlines (each sidecar's batch
    in flight waits, the results after it pile up in its spool), then let go at once: the
    leader has given many runs up (``lost``) and the late results must correct them all."""
    service = stack.callbacks
    service.hold()
    began = time.monotonic()
    try:
        wait_for(lambda: time.monotonic() > began + 10, 20, "ten seconds of held callbacks")
    finally:
        held = service.held
        service.release()
    assert held >= 3, f"only {held} requests were held: is every sidecar's callback path here?"
    return lambda: service.held == 0


SKEW_SECONDS = 30
"""How far the skewed replica's clock is ahead of the database's (the bound is 2 s)."""


def _skewed_clock(stack: Stack, leader: OperatorProcess) -> Recovered:
    """A replica whose clock is 30 s ahead (libfaketime) is the only one that could take over:
    the leader is killed and the other replica frozen. It must refuse to lead, leaving the lock
    free, until the frozen replica resumes and leads; the missed ticks are fired then."""
    scene = stack.scene
    (library,) = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")  # scripts/setup installs it
    skewed = scene.replicas.add(
        "skewed",
        own_env={
            "LD_PRELOAD": library,
            "FAKETIME": f"+{SKEW_SECONDS}s",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # timeouts and leases run on the true clock
        },
    )
    wait_for(lambda: (skewed.readyz() or {}).get("indexed"), 60, "the skewed replica indexed")
    (standby,) = [m for m in scene.replicas.members if m.alive() and m not in (leader, skewed)]
    standby.signal(signal.SIGSTOP)
    try:
        epoch = _epoch(scene)  # read once the standby is frozen: nothing sound can bump it now
        leader.signal(signal.SIGKILL)
        wait_for(lambda: "clock differs" in skewed.tail(200), 60, "the skewed replica's refusal")
        assert not skewed.leading() and _epoch(scene) == epoch, "a skewed replica led"
    finally:
        standby.signal(signal.SIGCONT)
    wait_for(lambda: _epoch(scene) > epoch, 60, "the resumed replica to lead")
    assert not skewed.leading()
    skewed.stop()
    scene.replicas.add()  # two sound replicas again
    return _new_leader_sends(scene)


def _dies_at(point: str, passes: int, then: str | None = None) -> Fault:
    """The leader dies (SIGKILL) at a failpoint (:mod:`cadenza.failpoints`): right after a
    claim is committed, between recording a run's pod and sending it, or right after a pod
    accepted a run the leader has not recorded yet."""

    def fault(stack: Stack, leader: OperatorProcess) -> Recovered:
        scene = stack.scene
        doomed = scene.replicas.add(
            f"doomed-{point}", own_env={"CADENZA_FAILPOINTS": f"{point}={passes}"}
        )
        wait_for(lambda: (doomed.readyz() or {}).get("indexed"), 60, "the doomed replica indexed")
        for other in scene.replicas.members:
            if other.alive() and other not in (leader, doomed):
                other.stop()  # so that the doomed replica is the one to lead next
        epoch = _epoch(scene)
        leader.signal(signal.SIGKILL)
        wait_for(lambda: not doomed.alive(), 60, f"the next leader to die {point}")
        assert _epoch(scene) > epoch, "the doomed replica never led"
        assert f"failpoint {point}" in doomed.tail(400)
        scene.replicas.add()
        scene.replicas.add()  # two sound replicas again
        if then is not None:
            # The instant is the point: the new leader met what it left behind.
            wait_for(
                lambda: any(then in r.tail(5000) for r in scene.replicas.members if r.alive()),
                60,
                f"the new leader to log {then!r}",
            )
        return _new_leader_sends(scene)

    return fault


def _live_pods(stack: Stack) -> list[SidecarPod]:
    return [p for name, p in stack.scene.pods.items() if name not in stack.dead_pods]


Fault = Callable[[Stack, OperatorProcess], Recovered]
SCENARIOS: list[tuple[str, Fault]] = [
    ("kill -9 of the leader", _kill_9),
    ("kill -9 of the leader right after it committed a claim", _dies_at("after-claim", 3)),
    (
        "kill -9 of the leader between recording a run's pod and sending it",
        _dies_at("before-send", 50, then="did not have it; sent again: True"),
    ),
    ("kill -9 of the leader right after a pod accepted a run", _dies_at("after-dispatch", 50)),
    ("SIGSTOP of the leader past the lease, then SIGCONT", _sigstop_past_the_lease),
    ("KILL of the leader's lock session on the server", _kill_the_lock_session),
    (f"MariaDB killed (-9), down {DOWN_SECONDS} s, restarted", _mariadb_crash),
    (f"kube-apiserver stopped, down {DOWN_SECONDS} s, restarted", _apiserver_restart),
    ("an executor pod deleted, its sidecar killed (-9) mid-run", _pod_deleted_mid_run),
    ("a hung sidecar: SIGSTOP past its runs' deadlines, then SIGCONT", _hung_sidecar),
    ("callbacks duplicated, reordered and re-sent late for 10 s", _bad_callbacks),
    ("a callback storm: all held back 10 s, then let go at once", _callback_storm),
    (f"a replica {SKEW_SECONDS} s ahead of the database is the only one left", _skewed_clock),
]


def _run(stack: Stack, name: str, fault: Fault) -> Verdict:
    scene = stack.scene
    wait_for(lambda: _flowing(scene), 60, "every Task firing before the fault")
    leader = scene.leader()
    start = now()
    injected = time.monotonic()
    recovered = fault(stack, leader)
    try:
        # A bound on the wait, not a target: the table reports each recovery's time.
        wait_for(recovered, RECOVERY_DEADLINE, f"recovery from: {name}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{scene.replicas.report()}") from None
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
    verdict = Verdict(name, recovery_seconds=recovery)
    return check(scene, NAMES, start, end, verdict, frozenset(stack.dead_pods))


def _status_disagrees(scene: Scenario) -> list[str]:
    """Where a Task's status says other than its history: counters, failure streak, last tick."""
    out = scene.plane.kubectl("get", "tasks", "-n", scene.namespace, "-o", "json").stdout
    statuses = {t["metadata"]["name"]: t.get("status") or {} for t in json.loads(out)["items"]}
    rows = scene.sql(
        "SELECT task_name, status, origin = 'misfire' AS misfire, COUNT(*) AS n,"
        " MAX(scheduled_at) AS last FROM task_executions WHERE namespace = %s"
        " GROUP BY task_name, status, misfire",
        scene.namespace,
    )
    counts: dict[str, dict[str, int]] = {n: collections.Counter() for n in NAMES}
    last: dict[str, datetime] = {}
    for row in rows:
        name = row["task_name"]
        if name not in counts:
            continue
        kind = {"succeeded": "succeeded", "skipped": "skipped", "cancelled": "cancelled"}.get(
            row["status"], "failed"
        )
        counts[name][kind] += int(row["n"])
        counts[name]["misfired"] += int(row["n"]) if row["misfire"] else 0
        last[name] = max(last.get(name, row["last"]), row["last"])
    wrong = []
    for name in NAMES:
        status = statuses.get(name, {})
        told = {k: v for k, v in (status.get("counters") or {}).items() if v}
        held = {k: v for k, v in counts[name].items() if v}
        tick = status.get("lastScheduleTime")
        same_tick = tick is not None and abs((naive(tick) - last[name]).total_seconds()) < 0.002
        if told != held or status.get("consecutiveFailures") or not same_tick:
            history = f"{held} up to {last[name]}"
            wrong.append(f"{name}: status says {told} up to {tick}; history {history}")
    return wrong


def _unsuccessful_runs(scene: Scenario, wrong: list[str]) -> list[str]:
    """The runs that did not succeed of the Tasks named first in ``wrong``: the scratch database
    is gone after the suite, so a disagreement shows the rows it is about."""
    names = [line.split(":", 1)[0] for line in wrong]
    if not names:
        return []
    rows = scene.sql(
        "SELECT task_name, id, status, origin, attempt, epoch, pod_name, scheduled_at,"
        " finished_at, updated_at, LEFT(error, 120) AS error FROM task_executions"
        " WHERE namespace = %s AND task_name IN %s AND status <> 'succeeded'"
        " ORDER BY task_name, id",
        scene.namespace,
        names,
    )
    return [" ".join(f"{k}={v}" for k, v in row.items()) for row in rows]


@pytest.mark.timeout(1800)
def test_faults_under_load_lose_and_repeat_nothing(loaded: Stack) -> None:
    verdicts = [_run(loaded, name, fault) for name, fault in SCENARIOS]
    print("\n" + HEADER + "\n" + "\n".join(v.row() for v in verdicts))
    # After all of it, every Task's status tells its history: suspended, the Tasks stop firing,
    # their last runs finish, and their status catches up with exactly what the history holds.
    scene = loaded.scene
    # The probes too: a Task still firing always has a run open when its runs are claimed
    # ahead of their ticks.
    every = [*NAMES, *loaded.probes]
    scene.apply(*(task(n, "* * * * * *", suspend=True, **SPEC) for n in every))
    wait_for(
        lambda: (
            not scene.sql(
                "SELECT id FROM task_executions WHERE namespace = %s AND status IN %s LIMIT 1",
                scene.namespace,
                OPEN,
            )
        ),
        60,
        "the last runs to finish",
    )
    try:
        wait_for(lambda: not _status_disagrees(scene), 60, "every Task's status to agree")
    except AssertionError:
        wrong = _status_disagrees(scene)
        raise AssertionError([*wrong[:5], *_unsuccessful_runs(scene, wrong[:3])]) from None
    for verdict in verdicts:
        assert verdict.clean, (
            verdict.scenario,
            verdict.duplicates[:5],
            verdict.lost[:5],
            verdict.stuck[:5],
            verdict.unrecorded[:5],
            verdict.started_late[:5],
        )

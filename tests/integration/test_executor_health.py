"""The leader's executor pool against real sidecars, a real API server and a real MariaDB.

Three fake pods (Pod objects whose status we write, KWOK-style) each have a real sidecar and demo
app behind their IP (127.0.0.27-29); a fourth pod with other labels must never be probed. A
small lister stands in for kopf's indexes: it lists the namespace's Executors and Pods and tells
the pool when they changed. What the pool decides is checked where people see it: its candidates,
the Executor's status on the API server and the ``executor_instances`` rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cadenza.core.ids import Epoch
from cadenza.devenv.controlplane import ControlPlane
from cadenza.devenv.pods import APP_PORT, SidecarPod, pod_manifest, set_pod_status
from cadenza.dispatch.client import DispatchClient, DispatchRequest, Outcome
from cadenza.dispatch.credentials import DispatchToken
from cadenza.executors.members import ExecutorSnapshot, PodSnapshot
from cadenza.executors.pool import ExecutorPool
from cadenza.executors.status import ExecutorStatusWriter
from cadenza.executors.tokens import TokenSource, read_token
from cadenza.kube import token_secrets
from cadenza.kube.client import api_client
from cadenza.kube.views import ExecutorView, PodView
from cadenza.settings import KubeSettings
from cadenza.store import engine as engines
from cadenza.store import fencing, migrations, mirror, schema
from cadenza.store.mirror_rows import ExecutorRow, InstanceRow
from tests.support import async_wait_for, wait_for

pytestmark = [pytest.mark.controlplane, pytest.mark.mariadb]

LOCK = "cadenza.test.executors"
IPS = ("127.0.0.27", "127.0.0.28", "127.0.0.29")
BYSTANDER_IP = "127.0.0.30"  # nothing listens: probing it would only fail
HEALTH_CHECK = {
    "periodSeconds": 1,
    "timeoutSeconds": 1,
    "failureThreshold": 2,
    "successThreshold": 2,
}


def executor_manifest(namespace: str, name: str, secret: str | None = None) -> dict[str, Any]:
    """An Executor of the workers; ``secret``: the (deprecated) ``tokenSecretRef`` it names."""
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "workers"}},
        "healthCheck": HEALTH_CHECK,
    }
    if secret is not None:
        spec["tokenSecretRef"] = {"name": secret}
    return {
        "apiVersion": "cadenza.dev/v1alpha1",
        "kind": "Executor",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


class ClusterView:
    """Stands in for kopf's indexes: the namespace's Executors and Pods, re-listed every 100 ms;
    the pool is told when they changed, as the kopf event handlers will."""

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str) -> None:
        self._custom = kubernetes.client.CustomObjectsApi(api)
        self._core = kubernetes.client.CoreV1Api(api)
        self._api = api
        self._namespace = namespace
        self.executors: list[ExecutorView] = []
        self.pods: list[PodView] = []

    def source(self) -> tuple[list[ExecutorView], list[PodView]]:
        return self.executors, self.pods

    def list(self) -> tuple[list[ExecutorView], list[PodView]]:
        listed: Any = self._custom.list_namespaced_custom_object(
            "cadenza.dev", "v1alpha1", self._namespace, "executors"
        )
        pods = self._core.list_namespaced_pod(self._namespace).items
        bodies = self._api.sanitize_for_serialization(pods)  # type: ignore[no-untyped-call]
        return (
            [ExecutorView.from_body(item) for item in listed["items"]],
            [PodView.from_body(body) for body in bodies],
        )

    async def follow(self, pool: ExecutorPool) -> None:
        while True:
            executors, pods = await asyncio.to_thread(self.list)
            if (executors, pods) != (self.executors, self.pods):
                self.executors, self.pods = executors, pods
                pool.changed()
            await asyncio.sleep(0.1)


@dataclass
class Harness:
    plane: ControlPlane
    namespace: str
    api: kubernetes.client.ApiClient
    engine: Engine
    pods: list[SidecarPod]
    pool: ExecutorPool
    writer: ExecutorStatusWriter
    client: DispatchClient
    token: str
    """The workers' dispatch token, from the Secret the operator made for them."""
    records: list[list[ExecutorSnapshot]] = field(default_factory=list)
    """One snapshot per pool version, in order: every state the pool went through."""

    def candidates(self, executor: str = "workers") -> list[str]:
        return [c.pod for c in self.pool.candidates(self.namespace, [executor])]

    def pod(self, name: str, executor: str = "workers") -> PodSnapshot:
        return pod_in(self.pool.snapshot(), executor, name)

    async def status(self, name: str = "workers") -> dict[str, Any]:
        custom = kubernetes.client.CustomObjectsApi(self.api)
        obj: Any = await asyncio.to_thread(
            custom.get_namespaced_custom_object,
            "cadenza.dev", "v1alpha1", self.namespace, "executors", name,
        )  # fmt: skip
        return dict(obj.get("status") or {})

    async def rows(self) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            table = schema.executor_instances
            with self.engine.connect() as conn:
                return {row.pod_name: row for row in conn.execute(sa.select(table))}

        return await asyncio.to_thread(read)

    async def kubectl(self, *args: str, input: str | None = None) -> None:
        await asyncio.to_thread(self.plane.kubectl, *args, input=input)


def app_answers(pod: SidecarPod) -> bool:
    try:
        with urllib.request.urlopen(f"http://{pod.ip}:{APP_PORT}/healthz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def pod_in(snapshots: list[ExecutorSnapshot], executor: str, pod: str) -> PodSnapshot:
    found = history([snapshots], executor, pod)
    assert len(found) == 1, f"{executor}/{pod} not in the snapshot"
    return found[0]


def history(records: list[list[ExecutorSnapshot]], executor: str, pod: str) -> list[PodSnapshot]:
    """The pod's states in the records that hold it (the first ones precede the listing)."""
    return [
        p for shot in records for s in shot if s.name == executor for p in s.pods if p.name == pod
    ]


def available(status: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == "Available"), None)


async def eventually(check: Callable[[], Awaitable[Any]], what: str, within: float = 30) -> Any:
    return await async_wait_for(check, within, what)


def mirror_rows(harness_api: ClusterView, engine: Engine, epoch: Epoch) -> None:
    """What the leader's mirror loop does: the Executor and its pods as rows."""
    executors, pods = harness_api.list()
    (view,) = executors
    spec = dict(view.spec)
    with fencing.leader_transaction(engine, LOCK, epoch) as conn:
        mirror.upsert_executor(
            conn,
            ExecutorRow(
                uid=view.uid, namespace=view.namespace, name=view.name,
                selector=dict(view.selector), port=9090, scheme="http", spec=spec,
                spec_hash=view.spec_hash, generation=view.generation,
            ),
        )  # fmt: skip
        mirror.upsert_instances(
            conn,
            view.uid,
            [
                InstanceRow(p.uid, p.name, p.namespace, p.ip, p.phase, p.ready)
                for p in pods
                if p.labels.get("app") == "workers"
            ],
        )


@pytest.fixture
async def harness(
    controlplane: ControlPlane, crds: None, namespace: str, database: str, tmp_path: Path
) -> AsyncIterator[Harness]:
    plane = controlplane
    engine = engines.create_engine(database, pool_size=2)
    await asyncio.to_thread(migrations.migrate, engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(fencing.BUMP_EPOCH_SQL, (LOCK, "test-leader"))
    with engine.connect() as conn:
        epoch = fencing.current_epoch(conn, LOCK)
    assert epoch is not None

    manifest = executor_manifest(namespace, "workers")
    await asyncio.to_thread(plane.kubectl, "apply", "-f", "-", input=json.dumps(manifest))
    api = api_client(KubeSettings(kubeconfig=str(plane.kubeconfig)))
    # The pods mount the workers' Secret, which the operator's code makes (as the pool would).
    applied = await asyncio.to_thread(
        plane.kubectl, "get", "executor", "workers", "-n", namespace, "-o", "json"
    )
    uid = json.loads(applied.stdout)["metadata"]["uid"]
    await asyncio.to_thread(read_token, token_secrets.TokenSecrets(api), namespace, "workers", uid)
    pods = [
        SidecarPod(f"worker-{i}", namespace, ip, tmp_path, {"app": "workers"}, executor="workers")
        for i, ip in enumerate(IPS)
    ]
    bystander = pod_manifest("bystander", namespace, {"app": "other"})
    await asyncio.to_thread(plane.kubectl, "apply", "-f", "-", input=json.dumps(bystander))
    await asyncio.to_thread(set_pod_status, plane, namespace, "bystander", BYSTANDER_IP)
    for pod in pods:
        await asyncio.to_thread(pod.mount_token, plane)
        await asyncio.to_thread(pod.start_processes)
        # start_processes waits for the sidecar only; runs sent before the app listens fail.
        await asyncio.to_thread(wait_for, lambda p=pod: app_answers(p), 30, "the demo app")
        await asyncio.to_thread(pod.create, plane)

    cluster = ClusterView(api, namespace)
    await asyncio.to_thread(mirror_rows, cluster, engine, epoch)
    client = DispatchClient()
    pool = ExecutorPool(
        cluster.source, client, TokenSource(api), engine=engine, lock_name=LOCK, epoch=epoch
    )
    writer = ExecutorStatusWriter(api, lease_valid=lambda: True, min_interval=2.0)
    token = pods[0].token
    assert token is not None
    harness = Harness(plane, namespace, api, engine, pods, pool, writer, client, token)

    async def record() -> None:
        seen = -1
        while True:
            seen = await pool.wait_updated(seen)
            harness.records.append(pool.snapshot())

    tasks = [
        asyncio.create_task(coro)
        for coro in (cluster.follow(pool), pool.run(), writer.run(pool), record())
    ]
    try:
        yield harness
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await client.close()
        for pod in pods:
            for proc in pod.processes:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
            await asyncio.to_thread(pod.stop_processes)
        api.close()  # type: ignore[no-untyped-call]
        engine.dispose()


async def test_healthy_pods_become_candidates_and_everyone_sees_it(harness: Harness) -> None:
    h = harness

    async def all_candidates() -> bool:
        return h.candidates() == ["worker-0", "worker-1", "worker-2"]

    await eventually(all_candidates, "three candidates")
    (first, *_) = h.pool.candidates(h.namespace, ["workers"])
    assert (first.ip, first.base_url, first.token) == (
        IPS[0], f"http://{IPS[0]}:9090", DispatchToken(h.token),
    )  # fmt: skip
    assert (first.capacity, first.in_flight, first.full) == (4, 0, False)
    assert all(p.name != "bystander" for s in h.pool.snapshot() for p in s.pods)

    async def status_complete() -> dict[str, Any] | None:
        status = await h.status()
        return status if status.get("healthyPods") == 3 else None

    status = await eventually(status_complete, "the Executor's status to show 3 healthy pods")
    assert (status["totalPods"], status["readyPods"], status["observedGeneration"]) == (3, 3, 1)
    assert [(p["name"], p["ip"], p["healthy"], p["ready"]) for p in status["pods"]] == [
        (f"worker-{i}", ip, True, True) for i, ip in enumerate(IPS)
    ]
    assert all(p["phase"] == "Running" and p["lastProbeTime"] for p in status["pods"])
    condition = available(status)
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("True", "HealthyPods")
    assert condition["message"] == "3 of 3 pods can take runs"

    async def rows_healthy() -> dict[str, Any] | None:
        rows = await h.rows()
        ok = len(rows) == 3 and all(r.healthy and r.last_probe_at for r in rows.values())
        return rows if ok else None

    rows = await eventually(rows_healthy, "executor_instances rows to show three healthy pods")
    assert {name: (r.in_flight, r.last_error) for name, r in rows.items()} == {
        f"worker-{i}": (0, None) for i in range(3)
    }

    # Runs in flight: counted when dispatched, confirmed by the sidecar's probe, gone on cancel.
    run = DispatchRequest(
        "in-flight-1", "uid-1", f"{h.namespace}/nightly", 1, "sleep", {"seconds": 60},
        datetime.now(UTC), 1, 120, "http://127.0.0.1:9/unused", "callback-token",
    )  # fmt: skip
    assert (await h.client.send(first.base_url, first.token, run)).outcome is Outcome.ACCEPTED
    h.pool.note_dispatched(first.pod_uid)
    assert h.pool.candidates(h.namespace, ["workers"])[0].in_flight == 1

    async def in_flight_everywhere() -> bool:
        status, rows = await h.status(), await h.rows()
        return bool(status["pods"][0]["inFlight"] == 1 and rows["worker-0"].in_flight == 1)

    await eventually(in_flight_everywhere, "inFlight 1 in status and rows")
    assert await h.client.cancel(first.base_url, first.token, run.execution_key)
    h.pool.note_finished(first.pod_uid)

    async def idle_everywhere() -> bool:
        status, rows = await h.status(), await h.rows()
        return bool(status["pods"][0]["inFlight"] == 0 and rows["worker-0"].in_flight == 0)

    await eventually(idle_everywhere, "inFlight back to 0")
    settled = await h.status()
    assert available(settled) == condition, "lastTransitionTime kept while the status held"

    # Probing every second must not mean writing every second.
    patches, writes = h.writer.patches, h.pool.store.writes if h.pool.store else 0
    probes = {p.name: p.probes for s in h.pool.snapshot() for p in s.pods}

    async def five_more_rounds() -> bool:
        return all(h.pod(n).probes >= count + 5 for n, count in probes.items())

    await eventually(five_more_rounds, "five more probes of every pod")
    assert h.writer.patches - patches <= 1
    assert h.pool.store is not None and h.pool.store.writes - writes <= 2


async def test_a_pod_that_stops_answering_is_excluded_then_readmitted(harness: Harness) -> None:
    h = harness

    async def all_candidates() -> bool:
        return len(h.candidates()) == 3

    await eventually(all_candidates, "three candidates")
    stopped = h.pods[1]
    failed_before = h.pod("worker-1").failed_probes
    os.kill(stopped.processes[0].pid, signal.SIGSTOP)

    async def excluded() -> bool:
        return "worker-1" not in h.candidates()

    await eventually(excluded, "worker-1 to be excluded")
    at_exclusion = h.pod("worker-1")
    assert at_exclusion.consecutive_failures >= HEALTH_CHECK["failureThreshold"]
    assert at_exclusion.failed_probes - failed_before >= HEALTH_CHECK["failureThreshold"]
    assert h.candidates() == ["worker-0", "worker-2"], "the others were never delayed"
    # Every state the pool went through: a candidate until the threshold was reached.
    for pod in history(h.records, "workers", "worker-1"):
        if pod.failed_probes > failed_before and pod.candidate:
            assert pod.consecutive_failures < HEALTH_CHECK["failureThreshold"]

    async def status_shows_it() -> dict[str, Any] | None:
        status = await h.status()
        pods = {p["name"]: p for p in status.get("pods") or []}
        bad = pods.get("worker-1", {})
        return status if status.get("healthyPods") == 2 and bad.get("healthy") is False else None

    status = await eventually(status_shows_it, "the status to show worker-1 unhealthy")
    assert status["pods"][1]["lastError"] == "no answer within 1 s"
    assert status["readyPods"] == 3, "Kubernetes still calls it Ready"

    async def row_shows_it() -> bool:
        row = (await h.rows())["worker-1"]
        return row.healthy is False

    await eventually(row_shows_it, "the executor_instances row to show worker-1 unhealthy")

    records_before = len(h.records)
    os.kill(stopped.processes[0].pid, signal.SIGCONT)

    async def readmitted() -> bool:
        return "worker-1" in h.candidates()

    await eventually(readmitted, "worker-1 to be readmitted")
    recovery = history(h.records[records_before:], "workers", "worker-1")
    first_back = next(p for p in recovery if p.candidate)
    assert first_back.consecutive_successes >= HEALTH_CHECK["successThreshold"]
    assert any(p.consecutive_successes == 1 and not p.candidate for p in recovery), (
        "one success alone must not readmit a pod that was unhealthy"
    )

    async def status_recovered() -> bool:
        return (await h.status()).get("healthyPods") == 3

    await eventually(status_recovered, "the status to show 3 healthy pods again")


async def test_a_pod_that_turns_unready_is_dropped_without_waiting_for_probes(
    harness: Harness,
) -> None:
    h = harness

    async def all_candidates() -> bool:
        return len(h.candidates()) == 3

    await eventually(all_candidates, "three candidates")
    await asyncio.to_thread(set_pod_status, h.plane, h.namespace, "worker-2", IPS[2], ready=False)

    async def dropped() -> bool:
        return "worker-2" not in h.candidates()

    await eventually(dropped, "worker-2 to be dropped")
    pod = h.pod("worker-2")
    assert (pod.ready, pod.healthy, pod.consecutive_failures) == (False, True, 0)

    async def status_unready() -> dict[str, Any] | None:
        status = await h.status()
        return status if status.get("readyPods") == 2 and status["healthyPods"] == 2 else None

    status = await eventually(status_unready, "the status to show worker-2 not ready")
    assert [p["ready"] for p in status["pods"]] == [True, True, False]
    was_available = available(status)
    assert was_available is not None and was_available["status"] == "True"

    await h.kubectl("delete", "pod", "worker-2", "-n", h.namespace, "--grace-period=0", "--force")

    async def forgotten() -> dict[str, Any] | None:
        names = [p.name for s in h.pool.snapshot() for p in s.pods]
        status = await h.status()
        return status if "worker-2" not in names and status["totalPods"] == 2 else None

    status = await eventually(forgotten, "the deleted pod to be forgotten")
    assert [p["name"] for p in status["pods"]] == ["worker-0", "worker-1"]

    for name, ip in (("worker-0", IPS[0]), ("worker-1", IPS[1])):
        await asyncio.to_thread(set_pod_status, h.plane, h.namespace, name, ip, ready=False)

    async def unavailable() -> dict[str, Any] | None:
        condition = available(await h.status())
        return condition if condition and condition["status"] == "False" else None

    condition = await eventually(unavailable, "Available=False")
    assert condition["reason"] == "NoHealthyPods"
    assert condition["message"] == "none of the 2 pods is Running and Ready"
    assert h.candidates() == []


async def test_an_executor_naming_a_secret_it_does_not_own_gets_no_token_from_it(
    harness: Harness,
) -> None:
    """``tokenSecretRef`` at the workers' Secret: the pods the guarded Executor selects are the
    workers' (they hold the workers' token), but the operator never reads that Secret for it."""
    h = harness
    manifest = executor_manifest(h.namespace, "guarded", "workers-dispatch-token")
    await h.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    async def guarded_probed() -> bool:
        shots = [s for s in h.pool.snapshot() if s.name == "guarded"]
        return bool(shots and shots[0].spec_error and all(p.healthy for p in shots[0].pods))

    await eventually(guarded_probed, "the guarded executor's pods probed healthy")
    assert h.candidates("guarded") == []
    assert len(h.candidates("workers")) == 3, "the same pods still serve the other executor"

    async def status_explains() -> dict[str, Any] | None:
        condition = available(await h.status("guarded"))
        return condition if condition else None

    condition = await eventually(status_explains, "the guarded executor's Available condition")
    assert (condition["status"], condition["reason"]) == ("False", "InvalidSpec")
    assert "spec.tokenSecretRef" in condition["message"]
    assert "'guarded-dispatch-token'" in condition["message"]

    # Dropping the ref, the Executor gets a token of its own: never the workers'.
    manifest["spec"].pop("tokenSecretRef")
    await h.kubectl("replace", "-f", "-", input=json.dumps(manifest))

    async def guarded_serves() -> bool:
        return len(h.candidates("guarded")) == 3

    await eventually(guarded_serves, "the guarded executor's pods to become candidates")
    (own,) = {c.token for c in h.pool.candidates(h.namespace, ["guarded"])}
    assert own is not None and own.current != h.token


async def test_a_secret_of_the_right_name_the_executor_does_not_own_is_never_read(
    harness: Harness,
) -> None:
    """Somebody made ``guarded-dispatch-token`` before the Executor existed: its token is not
    used, Available says why, and once it is deleted the operator makes the Executor's own."""
    h = harness
    await h.kubectl(
        "create", "secret", "generic", "guarded-dispatch-token", "-n", h.namespace,
        f"--from-literal=token={h.token}",
    )  # fmt: skip
    await h.kubectl("apply", "-f", "-", input=json.dumps(executor_manifest(h.namespace, "guarded")))

    async def refused() -> dict[str, Any] | None:
        condition = available(await h.status("guarded"))
        return condition if condition and "not owned" in condition["message"] else None

    condition = await eventually(refused, "Available=False naming the foreign Secret")
    assert (condition["status"], condition["reason"]) == ("False", "NoHealthyPods")
    assert f"Secret {h.namespace}/guarded-dispatch-token" in condition["message"]
    assert h.candidates("guarded") == []

    await h.kubectl("delete", "secret", "guarded-dispatch-token", "-n", h.namespace)

    async def guarded_serves() -> bool:
        return len(h.candidates("guarded")) == 3

    await eventually(guarded_serves, "the guarded executor's own Secret and candidates")
    (own,) = {c.token for c in h.pool.candidates(h.namespace, ["guarded"])}
    assert own is not None and own.current != h.token
    made = json.loads(
        (await asyncio.to_thread(
            h.plane.kubectl, "get", "secret", "guarded-dispatch-token", "-n", h.namespace,
            "-o", "json",
        )).stdout
    )  # fmt: skip
    (owner,) = made["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"]) == ("Executor", "guarded")

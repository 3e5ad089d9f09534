"""A whole Cadenza on this machine for one test: operator replicas, executor pods with real
sidecars, and helpers to read what happened (history rows, the pods' ledgers, Task status).

Each scenario gets its own namespace, database and loopback addresses; everything it started is
stopped when the test ends.

Dispatch authentication is on, as in production: a pod mounts its Executor's dispatch-token
Secret, which the operator makes once it sees the Executor. A pod added before its Executor
exists stays Pending (as the kubelet holds it for its Secret volume) and starts when
:meth:`Scenario.apply` applies the Executor.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
from sqlalchemy.engine import make_url

from cadenza.devenv.controlplane import ControlPlane
from cadenza.devenv.pods import APP_PORT, SIDECAR_PORT, SidecarPod, dispatch_token
from tests.support.operators import Replicas

# 127.0.1.x and 127.0.2.x for scenario pods: other suites use 127.0.0.x. Several test sessions
# may run on one machine at once: each starts at its own point of the range and passes over
# addresses in use, else a pod's sidecar fails to bind and the other session's answers for it.
_ADDRESSES = [f"127.0.{block}.{host}" for block in (1, 2) for host in range(1, 255)]
_start = os.getpid() % len(_ADDRESSES)
_addresses = itertools.cycle(_ADDRESSES[_start:] + _ADDRESSES[:_start])


def bindable(ip: str) -> bool:
    """Whether a sidecar pod could start on ``ip`` now: another test session may hold its ports."""
    for port in (SIDECAR_PORT, APP_PORT):
        with socket.socket() as probe:
            # As the sidecar and the app bind: a port left in TIME_WAIT is no obstacle.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((ip, port))
            except OSError:
                return False
    return True


def _free_address() -> str:
    for _ in _ADDRESSES:
        ip = next(_addresses)
        if bindable(ip):
            return ip
    raise RuntimeError("every scenario pod address is in use")


@dataclass
class Scenario:
    plane: ControlPlane
    namespace: str
    database_url: str
    workdir: Path
    replicas: Replicas
    pods: dict[str, SidecarPod] = field(default_factory=dict)
    pending: list[SidecarPod] = field(default_factory=list)
    """Pods whose Executor's dispatch-token Secret did not exist yet when they were added."""

    # -- objects ------------------------------------------------------------------------------

    def apply(self, *objects: dict[str, Any]) -> None:
        """Apply the objects; Executors first, then their pending pods start (once the operator
        made their Secrets), then the rest: pods are up before the Tasks that need them."""
        executors = [o for o in objects if o.get("kind") == "Executor"]
        others = [o for o in objects if o.get("kind") != "Executor"]
        if executors:
            self._kubectl_apply(executors)
            names = {e["metadata"]["name"] for e in executors}
            for pod in [p for p in self.pending if p.executor in names]:
                self._start(pod)
        if others:
            self._kubectl_apply(others)

    def _kubectl_apply(self, objects: list[dict[str, Any]]) -> None:
        self.plane.kubectl(
            "apply", "-n", self.namespace, "-f", "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
        )  # fmt: skip

    def add_pods(self, executor: str, count: int, prefix: str | None = None,
                 max_concurrency: int = 4) -> list[SidecarPod]:  # fmt: skip
        """``count`` pods labelled for ``executor``, each a real sidecar + demo app with the
        Executor's dispatch token; Pending until the operator has made its Secret."""
        made = []
        for _ in range(count):
            name = f"{prefix or executor}-{len(self.pods)}"
            pod = SidecarPod(
                name=name, namespace=self.namespace, ip=_free_address(), workdir=self.workdir,
                labels={"cadenza.dev/executor": executor}, max_concurrency=max_concurrency,
                executor=executor,
            )  # fmt: skip
            self.pods[name] = pod
            made.append(pod)
            if dispatch_token(self.plane, self.namespace, executor) is None:
                pod.create(self.plane, running=False)
                self.pending.append(pod)
            else:
                self._start(pod, created=False)
        return made

    def _start(self, pod: SidecarPod, created: bool = True) -> None:
        pod.mount_token(self.plane)
        pod.start_processes()
        if created:
            pod.set_running(self.plane)
            self.pending.remove(pod)
        else:
            pod.create(self.plane)

    def task_status(self, name: str) -> dict[str, Any]:
        out = self.plane.kubectl("get", "task", name, "-n", self.namespace, "-o", "json").stdout
        return dict(json.loads(out).get("status") or {})

    def events(self, name: str) -> list[dict[str, Any]]:
        out = self.plane.kubectl(
            "get", "events", "-n", self.namespace, "-o", "json",
            "--field-selector", f"involvedObject.name={name}",
        ).stdout  # fmt: skip
        return list(json.loads(out)["items"])

    # -- what happened ------------------------------------------------------------------------

    def sql(self, query: str, *args: object) -> list[dict[str, Any]]:
        url = make_url(self.database_url)
        conn = pymysql.connect(
            host=url.host, port=url.port or 3306, user=url.username, password=url.password,
            database=url.database, autocommit=True, cursorclass=pymysql.cursors.DictCursor,
        )  # fmt: skip
        with conn, conn.cursor() as cur:
            cur.execute(query, args)
            return list(cur.fetchall())

    def runs(self, task: str) -> list[dict[str, Any]]:
        """The task's history rows, oldest first."""
        return self.sql(
            "SELECT * FROM task_executions WHERE namespace = %s AND task_name = %s ORDER BY id",
            self.namespace, task,
        )  # fmt: skip

    def attempts(self, run_id: int) -> list[dict[str, Any]]:
        return self.sql(
            "SELECT * FROM execution_attempts WHERE execution_id = %s ORDER BY attempt", run_id
        )

    def ledger(self, pod: str | None = None) -> list[dict[str, Any]]:
        """What the demo apps really ran (all pods, or one), in order of arrival."""
        entries: list[dict[str, Any]] = []
        for name, p in self.pods.items():
            if pod is not None and name != pod:
                continue
            if p.ledger.exists():
                for line in p.ledger.read_text().splitlines():
                    if line.strip():
                        entries.append({**json.loads(line), "pod": name})
        return entries

    def leader(self) -> Any:
        return self.replicas.wait_for_leader()

    def metric(self, name: str, **labels: str) -> float:
        """A metric's value on the current leader (0 when absent)."""
        import urllib.request

        with urllib.request.urlopen(f"{self.leader().url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        series = f"{name}{{{wanted}}}" if labels else name
        for line in text.splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
        return 0.0


def executor(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cadenza.dev/v1alpha1", "kind": "Executor", "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"cadenza.dev/executor": name}},
            "healthCheck": {"periodSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 2},
            **spec,
        },
    }  # fmt: skip


def task(name: str, schedule: str, executors: list[str] | None = None, **spec: Any
         ) -> dict[str, Any]:  # fmt: skip
    return {
        "apiVersion": "cadenza.dev/v1alpha1", "kind": "Task", "metadata": {"name": name},
        "spec": {
            "schedule": schedule,
            "executors": [{"name": e} for e in (executors or ["pool"])],
            "handler": "echo",
            **spec,
        },
    }  # fmt: skip


@contextlib.contextmanager
def scenario(
    plane: ControlPlane,
    database_url: str,
    namespace: str,
    workdir: Path,
    replicas: int = 1,
    **env: str,
) -> Iterator[Scenario]:
    """Start ``replicas`` operator replicas (fast test tuning unless ``env`` says otherwise)."""
    tuning = {
        "CADENZA_DEADLINE_GRACE_SECONDS": "2",
        "CADENZA_STATUS_MIN_INTERVAL_SECONDS": "1",
        **env,
    }
    group = Replicas(plane, database_url, namespace, workdir, extra_env=tuning)
    scene = Scenario(plane, namespace, database_url, workdir, group)
    try:
        for _ in range(replicas):
            group.add()
        group.wait_indexed()
        yield scene
    finally:
        group.stop_all()
        for pod in scene.pods.values():
            pod.stop_processes()

"""The system the benchmark runs: control plane, scratch database, executor pods, replicas.

:class:`System` starts every piece the way the integration tests do (``cadenza.devenv``), and
registers how to stop each one on an :class:`contextlib.ExitStack` as soon as it exists, so a
failure half-way through still stops what was started. Replicas are stopped followers first, then
the leader, so no takeover happens while stopping; each one's exit code and stop time are kept.

Invariant: nothing here leaves a process behind once the stack is closed;
:func:`measuring.leftovers` checks it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes

import history
import kubeapi
import procstats
from cadenza.devenv import controlplane as cp
from cadenza.devenv import mariadb, pods
from measuring import say

NAMESPACE = "bench"
EXECUTOR = "bench-pool"
REPO = cp.REPO_ROOT


def executor_manifest(concurrency: int) -> dict[str, Any]:
    return {
        "apiVersion": "cadenza.dev/v1alpha1",
        "kind": "Executor",
        "metadata": {"name": EXECUTOR, "namespace": NAMESPACE},
        "spec": {
            "selector": {"matchLabels": {"cadenza.dev/executor": EXECUTOR}},
            "maxConcurrencyPerPod": concurrency,
        },
    }


def task_manifest(index: int, schedule: str = "* * * * * *") -> dict[str, Any]:
    return {
        "apiVersion": "cadenza.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": f"bench-{index:04d}", "namespace": NAMESPACE},
        "spec": {
            "schedule": schedule,
            "executors": [{"name": EXECUTOR}],
            "handler": "echo",
            "payload": {"task": index},
        },
    }


def pod_addresses(count: int) -> list[str]:
    """The first ``count`` addresses of 127.0.3.1-254 where a sidecar and its app can bind."""
    found = []
    for host in range(1, 255):
        ip = f"127.0.3.{host}"
        if all(_bindable(ip, port) for port in (pods.SIDECAR_PORT, pods.APP_PORT)):
            found.append(ip)
            if len(found) == count:
                return found
    raise RuntimeError(f"fewer than {count} free pod addresses in 127.0.3.0/24")


def _bindable(ip: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ip, port))
        except OSError:
            return False
    return True


def get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp)


@dataclass
class Replica:
    """One ``python -m cadenza operator`` process and the role it last reported."""

    name: str
    url: str
    log: Path
    proc: subprocess.Popen[bytes]
    role: str = "starting"

    def readyz(self) -> dict[str, Any] | None:
        try:
            return dict(get_json(f"{self.url}/readyz", timeout=0.5))
        except urllib.error.HTTPError as exc:
            return dict(json.load(exc))
        except (OSError, ValueError):
            return None

    def refresh_role(self) -> str:
        if self.proc.poll() is not None:
            self.role = "exited"
            return self.role
        state = self.readyz()
        if state is not None:
            self.role = "leader" if state.get("leading") else "follower"
        return self.role

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as resp:
            return history.parse_metrics(resp.read().decode())


@dataclass
class System:
    """Everything the benchmark started; ``stack`` stops it all in reverse order."""

    args: argparse.Namespace
    workdir: Path
    out: Path
    stack: contextlib.ExitStack
    plane: cp.ControlPlane | None = None
    database: str = ""
    replicas: list[Replica] = field(default_factory=list)
    pods: list[pods.SidecarPod] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    exits: dict[str, dict[str, Any]] = field(default_factory=dict)
    operator_overrides: dict[str, str] = field(default_factory=dict)
    """The ``CADENZA_*`` variables of the benchmark's own environment the replicas run with
    (every other setting is its default or the benchmark's own)."""

    def start(self) -> None:
        server = mariadb.Server()
        say(f"MariaDB {server.check()}")
        self.database = self.stack.enter_context(
            mariadb.scratch_database(server, prefix="cadenza_bench")
        )
        say(f"scratch database {self.database}; starting etcd and kube-apiserver")
        self.plane = cp.ControlPlane.start()
        self.stack.callback(self.plane.stop)
        # Runs after the pods and replicas (registered later) stopped, before the plane goes.
        self.stack.callback(self.save_logs)
        self.pids += self.plane.pids()
        self.plane.kubectl("apply", "-f", str(REPO / "crds"))
        for crd in ("tasks.cadenza.dev", "executors.cadenza.dev"):
            self.plane.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        self.plane.kubectl("create", "namespace", NAMESPACE)
        self.apply(executor_manifest(self.args.pod_concurrency))
        self._create_pods()
        database_url = server.url(self.database)
        self.stack.callback(self.stop_replicas)
        ports = [cp.free_port() for _ in range(self.args.replicas)]
        for index in range(self.args.replicas):
            self._start_replica(index, database_url, ports)
        for replica in self.replicas:
            cp.wait_until(
                lambda r=replica: bool((r.readyz() or {}).get("indexed")),
                120,
                f"{replica.name} indexed",
                interval=0.2,
            )
        cp.wait_until(lambda: len(self.leaders()) == 1, 60, "exactly one leader", interval=0.2)
        say(f"{self.leaders()[0].name} leads")
        self._start_pods()  # the leader has made their Executor's dispatch-token Secret

    def _create_pods(self) -> None:
        """The pods, Pending: as in a cluster, they wait for the dispatch-token Secret the
        operator makes for their Executor."""
        assert self.plane is not None
        for index, ip in enumerate(pod_addresses(self.args.pods)):
            pod = pods.SidecarPod(
                name=f"{EXECUTOR}-{index}",
                namespace=NAMESPACE,
                ip=ip,
                workdir=self.workdir / "pods",
                labels={"cadenza.dev/executor": EXECUTOR},
                max_concurrency=self.args.pod_concurrency,
                executor=EXECUTOR,
            )
            self.stack.callback(pod.stop_processes)
            pod.create(self.plane, running=False)
            self.pods.append(pod)

    def _start_pods(self) -> None:
        assert self.plane is not None
        for pod in self.pods:
            pod.mount_token(self.plane, timeout=60)
            pod.start_processes()
            self.pids += [p.pid for p in pod.processes]
            pod.set_running(self.plane)
            say(f"pod {pod.name}: sidecar {pod.sidecar_url}")

    def _start_replica(self, index: int, database_url: str, ports: list[int]) -> None:
        assert self.plane is not None
        name = f"replica-{index}"
        port = ports[index]
        # --callbacks-to next: results of this replica's dispatches go to the next replica, as a
        # Service in front of the replicas would spread them (a follower applies most of them).
        callbacks = ports[(index + 1) % len(ports)] if self.args.callbacks_to == "next" else port
        env = {
            "CADENZA_HTTP_ADVERTISE_URL": f"http://127.0.0.1:{callbacks}",
            "CADENZA_DATABASE_URL": database_url,
            "CADENZA_HTTP_HOST": "127.0.0.1",
            "CADENZA_HTTP_PORT": str(port),
            "CADENZA_INSTANCE_ID": name,
            "CADENZA_NAMESPACES": NAMESPACE,
            "CADENZA_LOCK_NAME": f"cadenza.bench.{self.database}",
            "CADENZA_LOG_LEVEL": "INFO",
            "CADENZA_API_OPEN_METRICS": "true",  # the benchmark reads the leader's /metrics
            "PYTHONUNBUFFERED": "1",
        }
        # Any other CADENZA_* variable of the benchmark's environment reaches the replicas.
        self.operator_overrides = {
            k: v
            for k, v in sorted(self.plane.env.items())
            if k.startswith("CADENZA_") and k not in env
        }
        env = self.plane.env | env
        log = self.workdir / f"{name}.log"
        proc = cp.spawn([sys.executable, "-m", "cadenza", "operator"], log, env)
        replica = Replica(name, f"http://127.0.0.1:{port}", log, proc)
        self.replicas.append(replica)
        self.pids.append(proc.pid)
        say(f"operator {name} on {replica.url} (pid {proc.pid})")

    def stop_replicas(self, grace: float = 20) -> None:
        """Followers first, then the leader, so no takeover (and no misfire) muddles the end.

        Records each replica's exit code and how long it took to stop: a replica still running
        ``grace`` seconds after SIGTERM is killed and exits with -9.
        """
        ordered = sorted(self.replicas, key=lambda r: r.role == "leader")
        for replica in ordered:
            if replica.refresh_role() == "exited":
                # Not stopped by us: a crash, or a signal from outside; the figures may lack it.
                say(f"WARNING: {replica.name} exited (code {replica.proc.returncode}) by itself")
            role, started = replica.role, time.monotonic()
            cp.terminate(replica.proc, grace)
            took = time.monotonic() - started
            code = replica.proc.returncode
            self.exits[replica.name] = {
                "role": role,
                "exit_code": code,
                "stop_seconds": round(took, 1),
            }
            say(f"stopped {replica.name} ({role}) in {took:.1f}s, exit code {code}")

    def apply(self, *objects: dict[str, Any]) -> None:
        assert self.plane is not None
        body = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        self.plane.kubectl("apply", "-f", "-", input=json.dumps(body), timeout=120)

    def leaders(self) -> list[Replica]:
        return [r for r in self.replicas if r.refresh_role() == "leader"]

    def leader(self) -> Replica:
        cp.wait_until(lambda: len(self.leaders()) == 1, 30, "exactly one leader", interval=0.2)
        return self.leaders()[0]

    def watched_processes(self) -> dict[str, int]:
        watched = {r.name: r.proc.pid for r in self.replicas} | {"bench (this script)": os.getpid()}
        assert self.plane is not None
        for name, proc in self.plane.processes.items():
            watched[name] = proc.pid
        for pod in self.pods:
            sidecar, app = pod.processes
            watched[f"{pod.name}/sidecar"] = sidecar.pid
            watched[f"{pod.name}/app"] = app.pid
        for pid in procstats.pids_named("mariadbd") or procstats.pids_named("mysqld"):
            watched["mariadbd"] = pid
        return watched

    def db(self) -> Any:
        return mariadb.Server().connect(self.database)

    def count(self, query: str, *params: Any) -> int:
        """The single number a ``SELECT COUNT(*) ...`` answers."""
        with self.db() as conn, conn.cursor() as cur:
            cur.execute(query, params)
            row = cur.fetchone()
        return int(row[0]) if row else 0

    def mirrored(self) -> int:
        """Tasks of the benchmark's namespace the leader has written to MySQL's ``tasks``."""
        return self.count("SELECT COUNT(*) FROM tasks WHERE namespace = %s", NAMESPACE)

    def open_runs(self) -> int:
        return self.count(
            "SELECT COUNT(*) FROM task_executions WHERE namespace = %s AND status NOT IN %s",
            NAMESPACE,
            tuple(history.TERMINAL),
        )

    def api(self) -> kubernetes.client.ApiClient:
        assert self.plane is not None
        api = kubeapi.client(self.plane)
        self.stack.callback(api.close)
        return api

    def sampler(self) -> procstats.Sampler:
        """Start sampling every process started so far; stopped with the rest."""
        sampler = procstats.Sampler(
            self.watched_processes(),
            role_of=lambda name: next(
                (r.refresh_role() for r in self.replicas if r.name == name), name
            ),
        )
        sampler.start()
        self.stack.callback(sampler.stop)
        return sampler

    def operator_metric(self, name: str) -> float:
        """``name`` summed over every running replica's /metrics (the leader may change)."""
        total = 0.0
        for replica in self.replicas:
            with contextlib.suppress(OSError, ValueError):
                total += history.metric_total(replica.metrics(), name)
        return total

    def save_logs(self) -> None:
        logs = self.out / "logs"
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir(parents=True)
        for path in [*self.workdir.glob("*.log"), *(self.workdir / "pods").glob("*.log")]:
            shutil.copy(path, logs / path.name)
        if self.plane is not None:
            for path in self.plane.workdir.glob("*.log"):
                shutil.copy(path, logs / path.name)


def cpu_seconds(replica: Replica) -> float | None:
    """The replica's CPU time so far, read from /proc at this instant (None once it exited)."""
    reading = procstats.read_process(replica.proc.pid)
    return None if reading is None else reading[0]

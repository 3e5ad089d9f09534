"""The local demo: a real control plane, MariaDB, two operator replicas, three executor pods and
the sample Tasks, all on this machine.

Run through ``scripts/demo``. It writes ``.cadenza-demo/`` in the directory it was started from:
``kubeconfig`` (its context names the REST API and ``cadenza-token`` in the extension
``cadenza.dev/api``, for the ``cadenza`` command), a shell-sourceable ``env`` (``KUBECONFIG``,
``CADENZA_DATABASE_URL``, ``CADENZA_API``, ``CADENZA_TOKEN``, ``CADENZA_CONSOLE``, ``PATH``), the
processes' ``logs/``, and ``ready`` once everything is up; it prints the web console's URL.
``CADENZA_TOKEN`` is a token of the ServiceAccount ``cadenza-demo-admin``, which a ClusterRole
allows everything on Cadenza's resources: the REST API's (and the console's) bearer token.
Ctrl-C or SIGTERM stops everything, in order, and removes ``ready``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from cadenza.devenv import controlplane as cp
from cadenza.devenv import mariadb, pods

REPO = cp.REPO_ROOT
DEMO_DATABASE = "cadenza_demo"
EXECUTOR = "demo-executor"
EXECUTOR_LABEL = {"cadenza.dev/executor": EXECUTOR}
ADMIN = "cadenza-demo-admin"
ADMIN_RBAC = {
    "apiVersion": "v1",
    "kind": "List",
    "items": [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": ADMIN, "namespace": "default"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": ADMIN},
         "rules": [{"apiGroups": ["cadenza.dev"], "resources": ["*"], "verbs": ["*"]},
                   {"nonResourceURLs": ["/metrics", "/api/v1/replicas"], "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": ADMIN},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": ADMIN},
         "subjects": [{"kind": "ServiceAccount", "name": ADMIN, "namespace": "default"}]},
    ],
}  # fmt: skip
"""Who the demo's ``CADENZA_TOKEN`` is: allowed every verb (``trigger`` too) on Cadenza's
resources and reading ``/metrics`` and ``/api/v1/replicas``, nothing else."""


def _say(message: str) -> None:
    print(f"demo: {message}", flush=True)


class Demo:
    def __init__(
        self,
        state_dir: Path,
        replicas: int,
        executor_pods: int,
        database: str = DEMO_DATABASE,
        pod_network: str = "127.0.0",
    ) -> None:
        self.state_dir = state_dir
        self.database = database
        self.pod_network = pod_network
        self.logs = state_dir / "logs"
        self.replicas = replicas
        self.executor_pods = executor_pods
        self.plane: cp.ControlPlane | None = None
        self.operators: list[subprocess.Popen[bytes]] = []
        self.pods: list[pods.SidecarPod] = []
        self.api_urls: list[str] = []

    def start(self) -> None:
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.logs.mkdir(parents=True)
        _say("starting etcd and kube-apiserver")
        self.plane = cp.ControlPlane.start(workdir=None)
        shutil.copy(self.plane.kubeconfig, self.state_dir / "kubeconfig")
        server = mariadb.Server()
        _say(f"MariaDB {server.check()}; database {self.database} (recreated)")
        server.drop_database(self.database)
        server.create_database(self.database)
        database_url = server.url(self.database)

        self.plane.kubectl("apply", "-f", str(REPO / "crds"))
        for crd in ("tasks.cadenza.dev", "executors.cadenza.dev"):
            self.plane.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")

        for index in range(self.replicas):
            self._start_operator(index, database_url)

        # As in a cluster: the pods mount their Executor's dispatch-token Secret, which the
        # operator makes once the Executor exists; until then they wait, Pending.
        for index in range(self.executor_pods):
            pod = pods.SidecarPod(
                name=f"demo-executor-{index}",
                namespace="default",
                ip=pods.loopback_ip(index, self.pod_network),
                workdir=self.logs,
                labels=EXECUTOR_LABEL,
                executor=EXECUTOR,
            )
            pod.create(self.plane, running=False)
            self.pods.append(pod)

        self.plane.kubectl("apply", "-n", "default", "-f", str(REPO / "examples"))
        for pod in self.pods:
            pod.mount_token(self.plane, timeout=60)
            pod.start_processes()
            pod.set_running(self.plane)
            _say(f"executor pod {pod.name} -> sidecar {pod.sidecar_url} (dispatch token mounted)")
        self._write_env(database_url)
        (self.state_dir / "ready").write_text(str(os.getpid()))

    def _start_operator(self, index: int, database_url: str) -> None:
        assert self.plane is not None
        port = cp.free_port()
        env = self.plane.env | {
            "CADENZA_DATABASE_URL": database_url,
            "CADENZA_HTTP_HOST": "127.0.0.1",
            "CADENZA_HTTP_PORT": str(port),
            "CADENZA_INSTANCE_ID": f"operator-{index}",
            "PYTHONUNBUFFERED": "1",
        }
        proc = cp.spawn(
            [sys.executable, "-m", "cadenza", "operator"], self.logs / f"operator-{index}.log", env
        )
        self.operators.append(proc)
        url = f"http://127.0.0.1:{port}"
        self.api_urls.append(url)
        cp.wait_until(lambda: _ready(url), 120, f"operator-{index} at {url}")
        _say(f"operator replica operator-{index} on {url}")

    def _write_env(self, database_url: str) -> None:
        assert self.plane is not None
        kubeconfig = (self.state_dir / "kubeconfig").resolve()
        self.plane.kubectl("apply", "-f", "-", input=json.dumps(ADMIN_RBAC))
        token = self.plane.kubectl(
            "create", "token", ADMIN, "-n", "default", "--duration=24h"
        ).stdout.strip()
        token_file = self.state_dir / "cadenza-token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        _add_api_extension(kubeconfig, self.api_urls[0], token_file.name)
        lines = [
            f"export KUBECONFIG={kubeconfig}",
            f"export CADENZA_DATABASE_URL={database_url}",
            f"export CADENZA_API={self.api_urls[0]}",
            f"export CADENZA_TOKEN={token}",
            f"export CADENZA_CONSOLE={self.api_urls[0]}/console/",
            # kubectl and helm, then this environment's `cadenza` and `kubectl-cadenza`.
            f"export PATH={self.plane.bin_dir}:{Path(sys.executable).parent}:$PATH",
        ]
        (self.state_dir / "env").write_text("\n".join(lines) + "\n")

    def stop(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / "ready").unlink()
        for proc in self.operators:
            cp.terminate(proc, grace=20)
        for pod in self.pods:
            pod.stop_processes()
        if self.plane is not None:
            self.plane.stop()
        _say("stopped; nothing left running")


def _add_api_extension(kubeconfig: Path, api_url: str, token_file: str) -> None:
    """Name the REST API in the current context's ``cadenza.dev/api`` extension, with a token
    file beside the kubeconfig, so ``cadenza`` and ``kubectl cadenza`` find both from
    ``KUBECONFIG`` alone (docs/cli.md). The file is JSON, which is YAML too."""
    config = json.loads(kubeconfig.read_text())
    for entry in config["contexts"]:
        if entry["name"] == config["current-context"]:
            extension = {"server": api_url, "tokenFile": token_file}
            entry["context"]["extensions"] = [{"name": "cadenza.dev/api", "extension": extension}]
    kubeconfig.write_text(json.dumps(config, indent=2) + "\n")


def _ready(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=1) as resp:
            return bool(json.load(resp).get("indexed"))
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=Path.cwd() / ".cadenza-demo")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--executor-pods", type=int, default=3)
    # A second demo beside a developer's (tests/integration/test_e2e_kubeconfig.py) needs its own
    # database, which the demo drops and recreates, and its own pod addresses.
    parser.add_argument("--database", default=DEMO_DATABASE, help=f"default {DEMO_DATABASE}")
    parser.add_argument(
        "--pod-network",
        default="127.0.0",
        help="first three octets of the executor pods' loopback addresses (.2, .3, ...)",
    )
    args = parser.parse_args()

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    demo = Demo(
        args.state_dir.resolve(), args.replicas, args.executor_pods, args.database, args.pod_network
    )
    try:
        demo.start()
        env = demo.state_dir / "env"
        _say("READY")
        print(
            f"""
  In another terminal:
    source {env}
    kubectl get tasks,executors,pods        # the sample Tasks and the demo executor pods
    cadenza replicas                        # or: kubectl cadenza replicas (docs/cli.md)
    cadenza tasks list

  The web console: {demo.api_urls[0]}/console/
    sign in with the token that `echo $CADENZA_TOKEN` prints (after `source {env}`);
    for another identity: kubectl create token <service-account>
    curl -s -H "Authorization: Bearer $CADENZA_TOKEN" $CADENZA_API/api/v1/tasks/test_task
    kubectl get task test-task -w           # the original sample fires every 10 seconds
    mysql -h127.0.0.1 -uroot -p123456 {args.database} -e 'SELECT * FROM task_executions'

  Stop with Ctrl-C (or: kill -TERM {os.getpid()}).""",
            flush=True,
        )
        stop.wait()
    except Exception as exc:
        _say(f"failed: {exc}")
        return 1
    finally:
        demo.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Executor pods without a kubelet: real sidecar processes behind Pod objects we fill in ourselves.

Like KWOK, the Pod object is created through the API server and its status (Running, Ready,
``podIP``) is then written by us through the status subresource. The "pod" behind the IP is a
real ``cadenza-sidecar`` process (with the demo application behind it) bound to a distinct
loopback address (127.0.0.2, 127.0.0.3, ...), so the operator reaches it over real HTTP.

Dispatch authentication is on, as in production: the Pod mounts its Executor's dispatch-token
Secret (the one the operator makes and owns, ``optional: false``), and
:meth:`SidecarPod.mount_token` does what the kubelet does with such a volume: wait until the
Secret exists, then hand its token to the sidecar as ``--token-file``. A pod without a token
starts only with ``insecure=True``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import sys
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cadenza.devenv.controlplane import ControlPlane, spawn, terminate, wait_until
from cadenza.kube.token_secrets import TOKEN_KEY, secret_name

SIDECAR_PORT = 9090
APP_PORT = 8080
TOKEN_DIR = "/var/run/cadenza/dispatch-token"


def pod_manifest(
    name: str, namespace: str, labels: Mapping[str, str], executor: str | None = None
) -> dict[str, Any]:
    """The Pod; with ``executor``, its sidecar mounts that Executor's dispatch-token Secret."""
    sidecar: dict[str, Any] = {
        "name": "cadenza-sidecar",
        "image": "example.invalid/cadenza-sidecar:demo",
        "ports": [{"containerPort": SIDECAR_PORT, "name": "cadenza"}],
    }
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "example.invalid/app:demo"}]}
    if executor is not None:
        sidecar["env"] = [
            {"name": "CADENZA_SIDECAR_TOKEN_FILE", "value": f"{TOKEN_DIR}/{TOKEN_KEY}"}
        ]
        sidecar["volumeMounts"] = [
            {"name": "dispatch-token", "mountPath": TOKEN_DIR, "readOnly": True}
        ]
        spec["volumes"] = [
            {
                "name": "dispatch-token",
                "secret": {"secretName": secret_name(executor), "optional": False},
            }
        ]
    spec["containers"].append(sidecar)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": spec,
    }


def dispatch_token(plane: ControlPlane, namespace: str, executor: str) -> str | None:
    """The token in the Executor's dispatch-token Secret; None while the operator has not made
    it yet."""
    found = plane.kubectl(
        "get", "secret", secret_name(executor), "-n", namespace, "-o", "json",
        "--ignore-not-found", check=False,
    )  # fmt: skip
    if found.returncode != 0 or not found.stdout.strip():
        return None
    raw = (json.loads(found.stdout).get("data") or {}).get(TOKEN_KEY)
    return base64.b64decode(raw).decode().strip() if raw else None


def set_pod_status(
    plane: ControlPlane,
    namespace: str,
    name: str,
    ip: str | None,
    ready: bool = True,
    phase: str = "Running",
) -> None:
    """Write the status a kubelet would: phase, Ready condition and the pod's IP."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [
            {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": now}
        ],
        "podIP": ip,
        "podIPs": [{"ip": ip}] if ip else [],
        "startTime": now,
        "containerStatuses": [
            {
                "name": container,
                "ready": ready,
                "restartCount": 0,
                "image": f"example.invalid/{container}:demo",
                "imageID": "",
                "state": {"running": {"startedAt": now}} if phase == "Running" else {},
            }
            for container in ("app", "cadenza-sidecar")
        ],
    }
    plane.kubectl(
        "patch",
        "pod",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


@dataclass
class SidecarPod:
    """One fake pod: the Pod object plus the sidecar and demo app processes behind its IP."""

    name: str
    namespace: str
    ip: str
    workdir: Path
    labels: Mapping[str, str]
    token: str | None = None
    """The dispatch token the sidecar requires (see :meth:`mount_token`)."""
    max_concurrency: int = 4
    processes: list[Any] = field(default_factory=list)
    executor: str | None = None
    """The Executor whose dispatch-token Secret the pod mounts."""
    insecure: bool = False
    """Start the sidecar without a token (``--insecure-no-auth``): only to test that mode."""

    def mount_token(self, plane: ControlPlane, timeout: float = 30) -> str:
        """Wait, as the kubelet does for a Secret volume with ``optional: false``, until the
        operator has made the Executor's dispatch-token Secret; the sidecar gets its token."""
        assert self.executor is not None, "a pod mounts the Secret of its Executor"
        executor = self.executor

        def mounted() -> bool:
            self.token = dispatch_token(plane, self.namespace, executor)
            return self.token is not None

        wait_until(
            mounted, timeout, f"Secret {self.namespace}/{secret_name(executor)} (the operator)"
        )
        assert self.token is not None
        return self.token

    @property
    def ledger(self) -> Path:
        return self.workdir / f"{self.name}.ledger.jsonl"

    @property
    def sidecar_url(self) -> str:
        return f"http://{self.ip}:{SIDECAR_PORT}"

    def start_processes(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        app = spawn(
            [
                sys.executable,
                "-m",
                "cadenza_sidecar.demo_app",
                "--listen",
                self.ip,
                "--port",
                str(APP_PORT),
                "--ledger",
                str(self.ledger),
            ],
            self.workdir / f"{self.name}.app.log",
        )
        argv = [
            sys.executable,
            "-m",
            "cadenza_sidecar",
            "--listen",
            self.ip,
            "--port",
            str(SIDECAR_PORT),
            "--pod-name",
            self.name,
            "--spool-dir",
            str(self.workdir / f"{self.name}.spool"),
            "--max-concurrency",
            str(self.max_concurrency),
            "--grace-seconds",
            "5",
        ]
        if self.token:
            token_file = self.workdir / f"{self.name}.token"
            token_file.write_text(self.token)
            argv += ["--token-file", str(token_file)]
        elif self.insecure:
            argv += ["--insecure-no-auth"]
        else:
            raise ValueError(
                f"pod {self.name} has no dispatch token: mount_token() first (or insecure=True)"
            )
        argv += ["--handler-url", f"http://{self.ip}:{APP_PORT}/run"]
        sidecar = spawn(argv, self.workdir / f"{self.name}.sidecar.log")
        self.processes = [sidecar, app]
        app_url = f"http://{self.ip}:{APP_PORT}"
        wait_until(lambda: self._up(app, app_url), 30, f"demo app of {self.name} on {app_url}")
        wait_until(
            lambda: self._up(sidecar, self.sidecar_url, self.name), 30, f"sidecar of {self.name}"
        )

    def _up(self, proc: Any, base_url: str, pod: str | None = None) -> bool:
        """Our process answers at ``base_url`` (not another one that holds the address)."""
        if proc.poll() is not None:
            raise RuntimeError(
                f"{base_url} of {self.name} exited with {proc.returncode}; is the address taken?"
            )
        body = _health(base_url)
        return body is not None and (pod is None or body.get("pod") == pod)

    def create(self, plane: ControlPlane, running: bool = True) -> None:
        """The Pod object, Running and Ready at our IP; or, not ``running``, Pending (its
        containers wait for the Secret) until :meth:`set_running`."""
        manifest = pod_manifest(self.name, self.namespace, self.labels, self.executor)
        plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        if running:
            self.set_running(plane)
        else:
            set_pod_status(plane, self.namespace, self.name, None, ready=False, phase="Pending")

    def set_running(self, plane: ControlPlane) -> None:
        set_pod_status(plane, self.namespace, self.name, self.ip)

    def stop_processes(self) -> None:
        for proc in self.processes:
            terminate(proc, grace=10)
        self.processes = []

    def kill_processes(self) -> None:
        """``kill -9`` of the sidecar and the app, as when a node dies: nothing is flushed."""
        for proc in self.processes:
            proc.kill()
            proc.wait()
        self.processes = []

    def signal_sidecar(self, signum: int) -> None:
        """E.g. SIGSTOP: the sidecar hangs, its socket still accepts connections."""
        self.processes[0].send_signal(signum)


def _health(base_url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{base_url}/healthz", timeout=1) as resp:
            body = json.load(resp)
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else {}


def loopback_ip(index: int, network: str = "127.0.0") -> str:
    """127.0.0.2, 127.0.0.3, ... (or ``<network>.2``, ...): Linux routes all of 127/8 to the
    loopback interface."""
    return f"{network}.{index + 2}"

"""Executor pods without a kubelet: real sidecar processes behind Pod objects we fill in ourselves.

Like KWOK, the Pod object is created through the API server and its status (Running, Ready,
``podIP``) is then written by us through the status subresource. The "pod" behind the IP is a
real ``cadenza-sidecar`` process (with the demo application behind it) bound to a distinct
loopback address (127.0.0.2, 127.0.0.3, ...), so the operator reaches it over real HTTP.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cadenza.devenv.controlplane import ControlPlane, spawn, terminate, wait_until

SIDECAR_PORT = 9090
APP_PORT = 8080


def pod_manifest(name: str, namespace: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "containers": [
                {"name": "app", "image": "example.invalid/app:demo"},
                {
                    "name": "cadenza-sidecar",
                    "image": "example.invalid/cadenza-sidecar:demo",
                    "ports": [{"containerPort": SIDECAR_PORT, "name": "cadenza"}],
                },
            ]
        },
    }


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
    max_concurrency: int = 4
    processes: list[Any] = field(default_factory=list)

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

    def create(self, plane: ControlPlane) -> None:
        plane.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(pod_manifest(self.name, self.namespace, self.labels)),
        )
        set_pod_status(plane, self.namespace, self.name, self.ip)

    def stop_processes(self) -> None:
        for proc in self.processes:
            terminate(proc, grace=10)
        self.processes = []


def _health(base_url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{base_url}/healthz", timeout=1) as resp:
            body = json.load(resp)
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else {}


def loopback_ip(index: int) -> str:
    """127.0.0.2, 127.0.0.3, ...: Linux routes all of 127/8 to the loopback interface."""
    return f"127.0.0.{index + 2}"

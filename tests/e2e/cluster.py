"""What the end-to-end suite may touch: a cluster through kubectl and a kubeconfig, and the REST
API over HTTP. Nothing else: no database, no process, no in-cluster import of Cadenza, so the
same tests run against the local demo and against a kind cluster.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import wait_for

Manifest = dict[str, Any]

TASK_API_VERSION = "cadenza.dev/v1alpha1"
TRIGGER_ANNOTATION = "cadenza.dev/trigger"
E2E_LABEL = "cadenza.dev/e2e"
EVERY_SECOND = "* * * * * *"


@dataclass(frozen=True)
class Cluster:
    kubectl_bin: str
    kubeconfig: Path
    namespace: str
    executor: str
    timeout: float
    """Deadline of every wait, in seconds."""

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.kubectl_bin, "--kubeconfig", str(self.kubeconfig), "-n", self.namespace, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def apply(self, manifest: Manifest, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=check)

    def get(self, kind: str, name: str) -> Manifest | None:
        """The object, or None when it does not exist."""
        proc = self.kubectl("get", kind, name, "-o", "json", "--ignore-not-found")
        return json.loads(proc.stdout) if proc.stdout.strip() else None

    def task_status(self, name: str) -> dict[str, Any]:
        task = self.get("tasks.cadenza.dev", name)
        assert task is not None, f"Task {self.namespace}/{name} is gone"
        status: dict[str, Any] = task.get("status") or {}
        return status

    def wait_for_status(self, name: str, what: str, check: Any) -> dict[str, Any]:
        """Poll the Task's status until ``check(status)`` holds; return that status."""

        def matched() -> dict[str, Any] | None:
            status = self.task_status(name)
            return status if check(status) else None

        found = wait_for(matched, self.timeout, f"Task {name}: {what}")
        assert found is not None
        return found


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def counted(status: dict[str, Any], outcome: str = "succeeded") -> int:
    return int((status.get("counters") or {}).get(outcome, 0))


def finished(status: dict[str, Any]) -> int:
    """Runs that ended, whatever their outcome."""
    return sum(int(v) for v in (status.get("counters") or {}).values())


@dataclass
class Tasks:
    """Creates uniquely named Tasks on the suite's executor and deletes them afterwards."""

    cluster: Cluster
    created: list[str] = field(default_factory=list)

    def manifest(self, name: str, schedule: str, **spec: Any) -> Manifest:
        return {
            "apiVersion": TASK_API_VERSION,
            "kind": "Task",
            "metadata": {"name": name, "labels": {E2E_LABEL: "true"}},
            "spec": {
                "schedule": schedule,
                "executionMode": "Parallel",
                "executors": [{"name": self.cluster.executor}],
                "handler": "echo",
                "payload": {"from": "tests/e2e"},
                **spec,
            },
        }

    def create(self, schedule: str, **spec: Any) -> str:
        name = f"e2e-{secrets.token_hex(4)}"
        self.created.append(name)
        self.cluster.apply(self.manifest(name, schedule, **spec))
        return name

    def delete_all(self) -> None:
        for name in self.created:
            self.cluster.kubectl(
                "delete", "tasks.cadenza.dev", name, "--ignore-not-found", "--wait=false",
                check=False,
            )  # fmt: skip


@dataclass(frozen=True)
class Api:
    """The REST API with a bearer token; answers are (status, JSON body or None)."""

    url: str
    token: str

    def call(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.url.rstrip("/") + path,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        return status, json.loads(raw) if raw else None


@dataclass
class Clock:
    """An every-second Task: ``advance(n)`` returns once it has finished ``n`` more runs."""

    cluster: Cluster
    name: str

    def advance(self, runs: int) -> None:
        seen = finished(self.cluster.task_status(self.name))
        self.cluster.wait_for_status(
            self.name, f"{runs} more runs of the clock", lambda s: finished(s) >= seen + runs
        )

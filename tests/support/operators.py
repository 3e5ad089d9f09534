"""Operator replicas as real processes (``python -m cadenza operator``) for integration tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cadenza.devenv.controlplane import ControlPlane, free_port, spawn, terminate
from tests.support import wait_for


@dataclass
class OperatorProcess:
    """One replica; its log is kept in ``log`` for the failure report."""

    instance_id: str
    port: int
    log: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        self.proc = spawn([sys.executable, "-m", "cadenza", "operator"], self.log, self.env)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def readyz(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as resp:
                return dict(json.load(resp))
        except urllib.error.HTTPError as exc:
            return dict(json.load(exc))
        except (OSError, ValueError):
            return None

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as resp:
            return json.load(resp)

    def leading(self) -> bool:
        state = self.readyz()
        return bool(state and state.get("leading"))

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGCONT)
        terminate(self.proc, grace=20)
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Replicas:
    """A set of replicas sharing one database, control plane and watched namespace."""

    plane: ControlPlane
    database_url: str
    namespace: str
    workdir: Path
    lease_seconds: int = 6
    extra_env: Mapping[str, str] = field(default_factory=dict)
    members: list[OperatorProcess] = field(default_factory=list)

    def add(
        self, instance_id: str | None = None, own_env: Mapping[str, str] | None = None
    ) -> OperatorProcess:
        """Start one more replica; ``own_env`` is added to this one's environment only."""
        instance_id = instance_id or f"replica-{len(self.members)}"
        port = free_port()
        env = dict(self.plane.env)
        env.update(
            {
                "CADENZA_DATABASE_URL": self.database_url,
                "CADENZA_HTTP_HOST": "127.0.0.1",
                "CADENZA_HTTP_PORT": str(port),
                "CADENZA_INSTANCE_ID": instance_id,
                "CADENZA_NAMESPACES": self.namespace,
                "CADENZA_LEASE_SECONDS": str(self.lease_seconds),
                "CADENZA_ACQUIRE_TIMEOUT_SECONDS": "1",
                "CADENZA_LOCK_NAME": f"cadenza.test.{self.namespace}",
                "CADENZA_LOG_LEVEL": "INFO",
                # The scenarios read the leader's /metrics; tests/api keeps the default (closed).
                "CADENZA_API_OPEN_METRICS": "true",
                "PYTHONUNBUFFERED": "1",
                **self.extra_env,
                **(own_env or {}),
            }
        )
        member = OperatorProcess(instance_id, port, self.workdir / f"{instance_id}.log", env)
        self.members.append(member)
        return member.start()

    def leaders(self) -> list[OperatorProcess]:
        return [m for m in self.members if m.alive() and m.leading()]

    def wait_for_leader(
        self, timeout: float = 60, exclude: OperatorProcess | None = None
    ) -> OperatorProcess:
        def one() -> OperatorProcess | None:
            leaders = [m for m in self.leaders() if m is not exclude]
            return leaders[0] if len(leaders) == 1 else None

        try:
            return wait_for(one, timeout, "exactly one leader")
        except AssertionError:
            raise AssertionError(self.report()) from None

    def wait_indexed(self, timeout: float = 60) -> None:
        for m in self.members:
            if m.alive():
                wait_for(
                    lambda m=m: (m.readyz() or {}).get("indexed"),
                    timeout,
                    f"{m.instance_id} indexed",
                )

    def report(self) -> str:
        return "\n\n".join(f"== {m.instance_id}\n{m.tail()}" for m in self.members)

    def stop_all(self) -> None:
        for m in self.members:
            m.stop()


@contextlib.contextmanager
def replicas(
    plane: ControlPlane, database_url: str, namespace: str, workdir: Path, count: int, **kw: Any
) -> Iterator[Replicas]:
    group = Replicas(plane, database_url, namespace, workdir, **kw)
    try:
        for _ in range(count):
            group.add()
        yield group
    finally:
        group.stop_all()

"""Fixtures for the sidecar's tests: real processes, real HTTP, no mocks.

- Every sidecar and demo app is a real ``python -m ...`` subprocess in its own process group,
  listening on its own loopback address (127.0.0.2, 127.0.0.3, ...; Linux routes all of 127/8), with
  its log in the test's temp dir (printed when a test fails to start it).
- The callback receiver is a real aiohttp server on 127.0.0.1 inside the test's event loop; it
  records every callback and answers with whatever status the test sets. It takes batched
  callbacks too (``batch_url``), recording each item as a callback of its own.
- Conditions are awaited with deadlines (``eventually``), never with fixed sleeps.
- Finalizers stop every process they started (SIGTERM so the sidecar drains and kills its
  commands, then SIGKILL of the whole group) and pytest removes the temp dirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support import spool as spool_files

PYTHON = sys.executable
TOKEN = "dispatch-token-for-tests"
CALLBACK_TOKEN = "per-run-callback-token"

# Fast retries and short graces keep every test at a few seconds.
FAST_FLAGS = [
    "--callback-backoff-initial-seconds", "0.05",
    "--callback-backoff-max-seconds", "0.3",
    "--callback-timeout-seconds", "2",
    "--grace-seconds", "0.5",
    "--flush-seconds", "1",
    "--kill-grace-seconds", "0.5",
]  # fmt: skip

# The program run in command mode: its behaviour is chosen by the payload.
COMMAND_SCRIPT = r"""
import json, os, signal, subprocess, sys, time
raw = sys.stdin.read()
payload = json.loads(raw) if raw else None
spec = payload if isinstance(payload, dict) else {}
if spec.get("ignoreSigterm"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if "childPidFile" in spec:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with open(spec["childPidFile"], "w") as f:
        f.write(str(child.pid))
if "pidFile" in spec:
    with open(spec["pidFile"], "w") as f:
        f.write(str(os.getpid()))
if "sleep" in spec:
    time.sleep(spec["sleep"])
if "stdoutBytes" in spec:
    sys.stdout.write("o" * spec["stdoutBytes"])
else:
    names = ["CADENZA_PAYLOAD", "CADENZA_HANDLER", "CADENZA_EXECUTION_ID", "CADENZA_ATTEMPT",
             "CADENZA_SCHEDULED_AT", "CADENZA_SIDECAR_TOKEN"]
    json.dump({"stdin": payload, "env": {n: os.environ.get(n) for n in names}}, sys.stdout)
sys.stderr.write(spec.get("stderr", ""))
sys.exit(spec.get("exit", 0))
"""

_loopback_numbers = itertools.count()


def next_loopback() -> str:
    """A loopback address no other process of this session has been given yet (mod 250)."""
    return f"127.0.0.{2 + next(_loopback_numbers) % 250}"


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


async def eventually(
    check: Callable[[], Any], *, within: float = 10.0, what: str = "the condition"
) -> Any:
    """Polls ``check`` (sync or async) until it returns something truthy, or fails the test
    after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CADENZA_") and k != "POD_NAME"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def write_private(path: Path, text: str) -> None:
    """Writes ``text`` to a new file of mode 0600 that replaces ``path`` at once (as the kubelet
    swaps a Secret volume's files), so a reader never sees it half-written."""
    temp = path.with_name(path.name + ".new")
    temp.unlink(missing_ok=True)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(temp, path)


def check_log_hygiene(log: str) -> None:
    """Every line is one JSON object, and nothing crashed or leaked along the way."""
    for line in log.splitlines():
        entry = json.loads(line)
        assert {"time", "level", "logger", "message"} <= entry.keys(), line
    for symptom in ("Traceback", "never retrieved", "Unclosed", "destroyed but it is pending"):
        assert symptom not in log, f"{symptom!r} in the sidecar log:\n{log}"


@dataclass
class Reply:
    status: int
    body: Any


class ManagedProcess:
    """A child in its own process group whose output goes to a log file."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.popen: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def send(self, signum: signal.Signals) -> None:
        """Signals the process itself (not its group), as the kubelet does."""
        assert self.popen is not None
        self.popen.send_signal(signum)

    def kill_group(self) -> None:
        """kill -9 of the whole process group, then reaps the process."""
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()

    async def wait_exit(self, within: float = 10.0) -> int:
        popen = self.popen
        assert popen is not None
        await eventually(lambda: popen.poll() is not None, within=within, what="process exit")
        return popen.returncode

    def stop(self) -> None:
        """SIGTERM, a bounded wait, then SIGKILL of the group; always reaps."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=8)
        self.kill_group()

    def wait_ready_blocking(self, url: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise AssertionError(f"{self.argv} exited early:\n{self.log()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
            time.sleep(0.02)
        raise AssertionError(f"{self.argv} not ready after {timeout} s:\n{self.log()}")


class SidecarProcess(ManagedProcess):
    """A sidecar subprocess plus small HTTP helpers that speak its protocol."""

    def __init__(
        self,
        args: list[str],
        *,
        host: str,
        port: int,
        spool_dir: Path,
        token: str | None,
        log_path: Path,
        env: dict[str, str],
    ) -> None:
        argv = [PYTHON, "-m", "cadenza_sidecar", "--listen", host, "--port", str(port), *args]
        super().__init__(argv, log_path, env)
        self.host = host
        self.port = port
        self.spool_dir = spool_dir
        self.token = token
        self.token_file: Path | None = None
        """The file the sidecar reads its token from (``token_via="file"``)."""

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> SidecarProcess:
        self.spawn()
        self.wait_ready_blocking(self.base_url + "/healthz")
        return self

    async def restart(self) -> None:
        """Starts the same command line again (same address, port and spool) and awaits health."""
        self.spawn()
        await eventually(self._healthy, within=15, what=f"sidecar health\n{self.log()}")

    async def _healthy(self) -> bool:
        if not self.running():
            raise AssertionError(f"sidecar exited early:\n{self.log()}")
        with contextlib.suppress(aiohttp.ClientError, OSError):
            return (await self.healthz()).status == 200
        return False

    def headers(self, token: str | None = "default") -> dict[str, str]:
        chosen = self.token if token == "default" else token
        return {} if chosen is None else {"Authorization": f"Bearer {chosen}"}

    async def request(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                method,
                self.base_url + path,
                # File-like: aiohttp warns about raw bytes bodies above 1 MiB.
                data=None if data is None else io.BytesIO(data),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=20),
            ) as response,
        ):
            text = await response.text()
            try:
                body = json.loads(text)
            except ValueError:
                body = text
            return Reply(response.status, body)

    async def post(self, body: Any, token: str | None = "default") -> Reply:
        headers = {"Content-Type": "application/json", **self.headers(token)}
        return await self.request(
            "POST", "/v1/executions", data=json.dumps(body).encode(), headers=headers
        )

    async def post_batch(self, bodies: Any, token: str | None = "default") -> Reply:
        """``POST /v1/executions:batch`` with ``{"executions": bodies}``."""
        return await self.post_raw_batch(json.dumps({"executions": bodies}).encode(), token)

    async def post_raw_batch(self, data: bytes, token: str | None = "default") -> Reply:
        headers = {"Content-Type": "application/json", **self.headers(token)}
        return await self.request("POST", "/v1/executions:batch", data=data, headers=headers)

    async def get(self, execution_id: str, token: str | None = "default") -> Reply:
        return await self.request(
            "GET", f"/v1/executions/{execution_id}", headers=self.headers(token)
        )

    async def delete(self, execution_id: str, token: str | None = "default") -> Reply:
        return await self.request(
            "DELETE", f"/v1/executions/{execution_id}", headers=self.headers(token)
        )

    async def healthz(self) -> Reply:
        return await self.request("GET", "/healthz")

    async def wait_state(self, execution_id: str, state: str, within: float = 10.0) -> Any:
        async def reached() -> Any:
            reply = await self.get(execution_id)
            return reply.body if reply.status == 200 and reply.body["state"] == state else None

        return await eventually(reached, within=within, what=f"{execution_id} to be {state}")

    def spooled(self) -> list[str]:
        return spool_files.spooled(self.spool_dir)


class DemoAppProcess(ManagedProcess):
    """The demo application container, with its ledger of calls."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.host = next_loopback()
        self.port = free_port(self.host)
        self.ledger_path = tmp / f"ledger-{self.host}-{self.port}.jsonl"
        argv = [
            PYTHON, "-m", "cadenza_sidecar.demo_app",
            "--listen", self.host, "--port", str(self.port), "--ledger", str(self.ledger_path),
        ]  # fmt: skip
        super().__init__(argv, tmp / f"demo-{self.host}-{self.port}.log", env)

    @property
    def handler_url(self) -> str:
        return f"http://{self.host}:{self.port}/run"

    def start(self) -> DemoAppProcess:
        self.spawn()
        self.wait_ready_blocking(f"http://{self.host}:{self.port}/healthz")
        return self

    def ledger(self, execution_id: str | None = None) -> list[dict[str, Any]]:
        if not self.ledger_path.exists():
            return []
        entries = [json.loads(line) for line in self.ledger_path.read_text().splitlines()]
        return [e for e in entries if execution_id is None or e["executionId"] == execution_id]


@dataclass
class ReceivedCallback:
    body: dict[str, Any]
    """The callback body; for a batch item, the item without its ``callbackUrl`` and ``token``."""
    authorization: str | None
    """The Bearer header; for a batch item, ``Bearer <the item's token>``."""
    answered: int
    """The status answered: the item's own for a batch answered 200, else the batch's."""
    via: str = "single"
    """``single`` or ``batch``."""
    callback_url: str | None = None
    """A batch item's ``callbackUrl``."""


@dataclass
class CallbackReceiver:
    """A real HTTP server recording callbacks; ``answer`` sets the status it replies with."""

    host: str = "127.0.0.1"
    port: int = field(default_factory=lambda: free_port("127.0.0.1"))
    answer: int = 200
    calls: list[ReceivedCallback] = field(default_factory=list)
    batch_answer: int = 200
    """Status of a batch request as a whole; anything but 200 answers no item."""
    item_answer: Callable[[dict[str, Any]], int] | None = None
    """Status of each item of a batch answered 200 (given the item); default ``answer``."""
    batches: list[list[str]] = field(default_factory=list)
    """The executionIds of every batch request, in arrival order."""
    hold_batches: asyncio.Event | None = None
    """When set to an unset event, batch requests are recorded, then held until it is set."""
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/callbacks"

    @property
    def batch_url(self) -> str:
        return f"http://{self.host}:{self.port}/batch"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/callbacks", self._receive)
        app.router.add_post("/batch", self._receive_batch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self.hold_batches is not None:
            self.hold_batches.set()  # a held request would stall the shutdown for a minute
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.json()
        answered = self.answer
        self.calls.append(ReceivedCallback(body, request.headers.get("Authorization"), answered))
        return web.json_response({"answer": answered}, status=answered)

    async def _receive_batch(self, request: web.Request) -> web.Response:
        items = (await request.json())["callbacks"]
        self.batches.append([item["executionId"] for item in items])
        if self.hold_batches is not None:
            await self.hold_batches.wait()
        whole = self.batch_answer
        statuses = []
        for item in items:
            status = whole
            if whole == 200:
                status = self.answer if self.item_answer is None else self.item_answer(item)
            statuses.append(status)
            body = {k: v for k, v in item.items() if k not in ("callbackUrl", "token")}
            self.calls.append(
                ReceivedCallback(
                    body, f"Bearer {item['token']}", status, "batch", item["callbackUrl"]
                )
            )
        if whole != 200:
            return web.json_response({"error": "batch refused"}, status=whole)
        return web.json_response({"results": [{"status": status} for status in statuses]})

    def batched_ids(self) -> list[str]:
        """Every executionId posted in a batch, in order, repeats included."""
        return [execution_id for batch in self.batches for execution_id in batch]

    def attempts(self, execution_id: str) -> list[ReceivedCallback]:
        return [c for c in self.calls if c.body.get("executionId") == execution_id]

    def acknowledged(self, execution_id: str) -> list[dict[str, Any]]:
        return [c.body for c in self.attempts(execution_id) if 200 <= c.answered < 300]

    async def wait_acknowledged(self, execution_id: str, within: float = 10.0) -> dict[str, Any]:
        acked = await eventually(
            lambda: self.acknowledged(execution_id),
            within=within,
            what=f"an acknowledged callback for {execution_id}",
        )
        body: dict[str, Any] = acked[0]
        return body

    def dispatch_body(
        self,
        handler: str = "echo",
        payload: Any = None,
        *,
        execution_id: str | None = None,
        timeout: float = 30,
        attempt: int = 1,
        batched: bool = False,
        **overrides: Any,
    ) -> dict[str, Any]:
        """A valid ``POST /v1/executions`` body whose callback comes to this receiver (with a
        ``callbackBatchUrl`` when ``batched``)."""
        body = {
            "executionId": execution_id or f"exec-{uuid.uuid4().hex[:12]}",
            "taskUid": str(uuid.uuid4()),
            "task": "tests/demo-task",
            "epoch": 7,
            "handler": handler,
            "payload": payload,
            "scheduledAt": "2024-05-01T12:00:00Z",
            "attempt": attempt,
            "timeoutSeconds": timeout,
            "callbackUrl": self.url,
            "callbackToken": CALLBACK_TOKEN,
        }
        if batched:
            body["callbackBatchUrl"] = self.batch_url
        body.update(overrides)
        return body


@pytest.fixture
async def receiver() -> AsyncIterator[CallbackReceiver]:
    server = CallbackReceiver()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def demo_app(tmp_path: Path) -> Iterator[DemoAppProcess]:
    app = DemoAppProcess(tmp_path, _child_env())
    try:
        yield app.start()
    finally:
        app.stop()


SidecarFactory = Callable[..., SidecarProcess]


class SidecarLauncher:
    """Starts sidecars with test-friendly flags and stops them all at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[SidecarProcess] = []

    def start(
        self,
        *,
        handler_url: str | None = None,
        command: list[str] | None = None,
        token: str | None = TOKEN,
        token_via: str = "file",
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        spool_dir: Path | None = None,
    ) -> SidecarProcess:
        host = next_loopback()
        name = f"sidecar-{len(self.started)}"
        spool = spool_dir or self.directory / f"{name}-spool"
        args = ["--pod-name", f"pod-{host}", "--spool-dir", str(spool), *FAST_FLAGS]
        child_env = _child_env(env)
        token_file: Path | None = None
        if token is not None and token_via == "file":
            token_file = self.directory / f"{name}-token"
            write_private(token_file, token + "\n")  # as a Secret mounted with defaultMode 0400
            args += ["--token-file", str(token_file)]
        elif token is not None:
            child_env["CADENZA_SIDECAR_TOKEN"] = token
        args += list(extra_args)
        if handler_url is not None:
            args += ["--handler-url", handler_url]
        if command is not None:
            args += ["--command", *command]  # last: everything after it is the command
        sidecar = SidecarProcess(
            args,
            host=host,
            port=free_port(host),
            spool_dir=spool,
            token=token,
            log_path=self.directory / f"{name}.log",
            env=child_env,
        )
        sidecar.token_file = token_file
        self.started.append(sidecar)
        return sidecar.start()

    def stop_all(self) -> None:
        """Stops every sidecar, then checks their logs stayed structured and crash-free."""
        for sidecar in self.started:
            sidecar.stop()
        for sidecar in self.started:
            check_log_hygiene(sidecar.log())


@pytest.fixture
def start_sidecar(tmp_path: Path) -> Iterator[SidecarFactory]:
    """Starts sidecars: ``start_sidecar(handler_url=...)`` or ``start_sidecar(command=[...])``."""
    launcher = SidecarLauncher(tmp_path)
    yield launcher.start
    launcher.stop_all()


@pytest.fixture(scope="module")
def shared_demo_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoAppProcess]:
    """One demo app for a whole module, for tests that only need it to exist."""
    app = DemoAppProcess(tmp_path_factory.mktemp("demo"), _child_env())
    try:
        yield app.start()
    finally:
        app.stop()


@pytest.fixture(scope="module")
def shared_sidecar(
    tmp_path_factory: pytest.TempPathFactory, shared_demo_app: DemoAppProcess
) -> Iterator[SidecarProcess]:
    """One HTTP-mode sidecar for a whole module of tests that never change its state."""
    launcher = SidecarLauncher(tmp_path_factory.mktemp("sidecar"))
    yield launcher.start(handler_url=shared_demo_app.handler_url)
    launcher.stop_all()


@pytest.fixture
def http_sidecar(
    receiver: CallbackReceiver, demo_app: DemoAppProcess, start_sidecar: SidecarFactory
) -> SidecarProcess:
    """A sidecar in HTTP mode in front of the demo app, with the dispatch token configured.

    Requested after the receiver and the demo app so that it is stopped first: it drains while
    the app and the receiver are still there, as in a pod.
    """
    return start_sidecar(handler_url=demo_app.handler_url)


@pytest.fixture
def script_command() -> list[str]:
    """The argv of the payload-driven test program (COMMAND_SCRIPT)."""
    return [PYTHON, "-c", COMMAND_SCRIPT]


@pytest.fixture
def command_sidecar(
    receiver: CallbackReceiver, script_command: list[str], start_sidecar: SidecarFactory
) -> SidecarProcess:
    """A sidecar in command mode running COMMAND_SCRIPT per execution."""
    return start_sidecar(command=script_command)


@pytest.fixture
def wait_until() -> Callable[..., Awaitable[Any]]:
    """``await wait_until(check, within=..., what=...)``: the deadline-bound poller."""
    return eventually


@pytest.fixture
def alive() -> Callable[[int], bool]:
    """``alive(pid)``: whether a process exists and is not a zombie."""
    return process_exists


@pytest.fixture
def unused_address() -> str:
    """``host:port`` where nothing listens (a free port on a fresh loopback address)."""
    host = next_loopback()
    return f"{host}:{free_port(host)}"


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., ManagedProcess]]:
    """``spawn(argv, env=...)``: any process in its own group, stopped at the end of the test."""
    started: list[ManagedProcess] = []

    def start(argv: list[str], env: dict[str, str] | None = None) -> ManagedProcess:
        process = ManagedProcess(argv, tmp_path / f"process-{len(started)}.log", _child_env(env))
        started.append(process)
        process.spawn()
        return process

    yield start
    for process in started:
        process.stop()

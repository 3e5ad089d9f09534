"""Handler invocation: turn one execution request into an Outcome, over HTTP or as a command.

A command gets the payload as JSON on stdin and, up to 64 KiB, in ``CADENZA_PAYLOAD``; plus
``CADENZA_HANDLER``, ``CADENZA_EXECUTION_ID``, ``CADENZA_ATTEMPT`` and ``CADENZA_SCHEDULED_AT``.

Invariants:
- ``invoke`` returns an Outcome for everything the handler does (any status, any exit code, an
  unreachable app, a missing program); it raises only CancelledError.
- Cancelling ``invoke`` aborts the work: the HTTP call's connection is closed, and the command's
  whole process group gets SIGTERM, then SIGKILL after the kill grace. It returns (by raising
  CancelledError) only once the command has been reaped, so a cancelled run leaves no process.
- With ``--handler-user`` the command runs as that uid and gid with no supplementary groups
  (switched in the child before exec), so it cannot read the sidecar's token file or spool.
- Output kept in results and errors is capped at ``max_output_bytes`` per stream; the pipes are
  still drained to the end so a chatty command never blocks on a full pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from typing import Any, Protocol

import aiohttp

from cadenza_sidecar import protocol
from cadenza_sidecar.protocol import ExecutionRequest, JsonValue, Outcome, RunState
from cadenza_sidecar.settings import HandlerSettings

logger = logging.getLogger(__name__)

_CHUNK = 65536
# Linux refuses a single environment string above 128 KiB (MAX_ARG_STRLEN) with E2BIG; larger
# payloads are passed on stdin only, which has no limit.
MAX_ENV_PAYLOAD_BYTES = 64 * 1024


class Handler(Protocol):
    async def invoke(self, request: ExecutionRequest) -> Outcome: ...


class CappedOutput:
    """Collects a stream's bytes, keeping the head (or the tail) up to a limit."""

    def __init__(self, limit: int, *, keep_tail: bool = False) -> None:
        self._limit = limit
        self._keep_tail = keep_tail
        self._data = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        self._data += chunk
        excess = len(self._data) - self._limit
        if excess > 0:
            self.dropped += excess
            if self._keep_tail:
                del self._data[:excess]
            else:
                del self._data[self._limit :]

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def text(self) -> str:
        text = self._data.decode("utf-8", errors="replace")
        if not self.truncated:
            return text
        marker = f"[... {self.dropped} bytes truncated ...]"
        return f"{marker}{text}" if self._keep_tail else f"{text}{marker}"

    def data(self) -> bytes:
        return bytes(self._data)


def output_result(output: CappedOutput, *, as_json: bool) -> JsonValue:
    """A handler's output as a result: parsed JSON when it is complete JSON, else the text."""
    if not output.data().strip():
        return None
    if as_json and not output.truncated:
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            parsed: JsonValue = protocol.loads(output.data())
            return parsed
    return output.text()


class HttpHandler:
    """Calls the application container: ``POST <url>`` with the run's essentials."""

    def __init__(self, url: str, session: aiohttp.ClientSession, max_output_bytes: int) -> None:
        self._url = url
        self._session = session
        self._limit = max_output_bytes

    async def invoke(self, request: ExecutionRequest) -> Outcome:
        body = protocol.dumps(
            {
                "executionId": request.execution_id,
                "handler": request.handler,
                "payload": request.payload,
                "attempt": request.attempt,
                "scheduledAt": request.scheduled_at,
                "task": request.task,
                "epoch": request.epoch,
            }
        )
        try:
            async with self._session.post(
                self._url,
                data=body.encode(),
                headers={"Content-Type": "application/json"},
                allow_redirects=False,
            ) as response:
                output = CappedOutput(self._limit)
                async for chunk in response.content.iter_any():
                    output.add(chunk)
                status = response.status
                is_json = response.content_type.endswith(("/json", "+json"))
        except (aiohttp.ClientError, OSError) as exc:
            return Outcome(
                RunState.FAILED,
                error=f"handler call to {self._url} failed: {type(exc).__name__}: {exc}",
            )
        if 200 <= status < 300:
            return Outcome(RunState.SUCCEEDED, result=output_result(output, as_json=is_json))
        return Outcome(RunState.FAILED, error=f"handler answered HTTP {status}: {output.text()}")


class CommandHandler:
    """Runs a program per execution in its own process group."""

    def __init__(self, settings: HandlerSettings) -> None:
        assert settings.command is not None
        self._argv = settings.command
        self._settings = settings

    def _environment(self, request: ExecutionRequest, payload: str) -> dict[str, str]:
        env = dict(self._settings.child_env)
        env.update(
            CADENZA_HANDLER=request.handler,
            CADENZA_EXECUTION_ID=request.execution_id,
            CADENZA_ATTEMPT=str(request.attempt),
            CADENZA_SCHEDULED_AT=request.scheduled_at,
        )
        if len(payload.encode()) <= MAX_ENV_PAYLOAD_BYTES:
            env["CADENZA_PAYLOAD"] = payload
        return env

    async def invoke(self, request: ExecutionRequest) -> Outcome:
        payload = protocol.dumps(request.payload)
        user = self._settings.user
        as_user: dict[str, Any] = (
            {} if user is None else {"user": user.uid, "group": user.gid, "extra_groups": []}
        )
        try:
            process = await asyncio.create_subprocess_exec(
                *self._argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._environment(request, payload),
                start_new_session=True,  # own process group: a kill reaches its children too
                **as_user,  # switched in the child before exec (see handler_user)
            )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            return Outcome(RunState.FAILED, error=f"could not start {self._argv[0]!r}: {exc}")
        stdout = CappedOutput(self._settings.max_output_bytes)
        stderr = CappedOutput(self._settings.max_output_bytes, keep_tail=True)
        try:
            await asyncio.gather(
                _feed(process, payload.encode()),
                _drain(process.stdout, stdout),
                _drain(process.stderr, stderr),
            )
            exit_code = await process.wait()
        except asyncio.CancelledError:
            await self._terminate(process)
            raise
        result = output_result(stdout, as_json=True)
        if exit_code == 0:
            return Outcome(RunState.SUCCEEDED, result=result, exit_code=0)
        error = f"exit code {exit_code}"
        if stderr.data().strip():
            error = f"{error}: {stderr.text()}"
        return Outcome(RunState.FAILED, result=result, error=error, exit_code=exit_code)

    async def _terminate(self, process: asyncio.subprocess.Process) -> None:
        """SIGTERM to the group, SIGKILL after the grace, and reap the leader."""
        _signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self._settings.kill_grace_seconds)
        except TimeoutError:
            logger.warning(
                "command ignored SIGTERM, killing it",
                extra={"pid": process.pid, "graceSeconds": self._settings.kill_grace_seconds},
            )
        # Also after a clean exit: stragglers of the group must not outlive the run.
        _signal_group(process.pid, signal.SIGKILL)
        await process.wait()


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


async def _feed(process: asyncio.subprocess.Process, data: bytes) -> None:
    stdin = process.stdin
    assert stdin is not None
    # A command that never reads stdin (or exits early) is fine: its payload is in the env too.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(data)
        await stdin.drain()
    stdin.close()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        await stdin.wait_closed()


async def _drain(stream: asyncio.StreamReader | None, output: CappedOutput) -> None:
    assert stream is not None
    while chunk := await stream.read(_CHUNK):
        output.add(chunk)


def create(settings: HandlerSettings, session: aiohttp.ClientSession | None) -> Handler:
    """The handler for the configured mode; HTTP mode needs a client session."""
    if settings.url is not None:
        assert session is not None
        return HttpHandler(settings.url, session, settings.max_output_bytes)
    return CommandHandler(settings)

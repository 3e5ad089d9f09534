"""The sidecar as the original system's sample executor: it registers itself with a Cadenza REST
API, heartbeats, and says when it drains.

Invariants:
- Until the first registration answers, ``/v1/*`` accepts only the token stored by an earlier
  registration (``<spool>/dispatch-token``) or the configured one; with neither it accepts
  nobody (an unguessable token), so an unregistered sidecar never runs an unauthenticated run.
- The dispatch token the registration answers is used at once and stored (mode 0600) so that a
  restart accepts dispatches before it has registered again.
- Heartbeats go every ``heartbeat_seconds``; a 404 (the instance was deregistered or its
  Executor deleted) registers again. Failures are logged when their cause changes and retried
  with a growing delay (capped at 30 s); the HTTP server keeps serving meanwhile.
- On drain the instance is marked ``draining`` (no new runs), then ``offline`` once drained;
  both best effort, bounded by a short timeout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import urllib.parse
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from cadenza_sidecar.settings import RegistrationSettings

logger = logging.getLogger(__name__)

TOKEN_FILE = "dispatch-token"
_MAX_BACKOFF = 30.0
_STATE_TIMEOUT = 5.0


class TokenHolder(Protocol):
    def use_token(self, token: str) -> None: ...


class RegistrationError(Exception):
    """The scheduler refused or did not answer; the message says which and why."""


def stored_token(spool_dir: Path) -> str | None:
    """The dispatch token an earlier registration stored, if any."""
    try:
        return (spool_dir / TOKEN_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


class Registrar:
    def __init__(
        self,
        settings: RegistrationSettings,
        session: aiohttp.ClientSession,
        holder: TokenHolder,
        spool_dir: Path,
    ) -> None:
        self._settings = settings
        self._session = session
        self._holder = holder
        self._spool_dir = spool_dir
        self._registered = False
        self._last_error: str | None = None
        self.registrations = 0
        self.heartbeats = 0

    @property
    def _prefix(self) -> str:
        base = self._settings.scheduler_url + "/api/v1"
        if self._settings.namespace:
            base += "/namespaces/" + urllib.parse.quote(self._settings.namespace, safe="")
        return base + "/executors"

    @property
    def _instance_url(self) -> str:
        return f"{self._prefix}/{urllib.parse.quote(self._settings.instance_id, safe='')}"

    async def run(self) -> None:
        """Register, then heartbeat, until cancelled."""
        backoff = 0.5
        while True:
            try:
                if self._registered:
                    await self._heartbeat()
                else:
                    await self._register()
            except RegistrationError as exc:
                if str(exc) != self._last_error:
                    logger.warning("registration with the scheduler failed (will retry): %s", exc)
                self._last_error = str(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            if self._last_error is not None:
                logger.info("the scheduler answers again")
            self._last_error, backoff = None, 0.5
            if self._registered:  # a 404 heartbeat registers again at once
                await asyncio.sleep(self._settings.heartbeat_seconds)

    async def set_state(self, state: str) -> None:
        """Tell the scheduler ``online``, ``draining`` or ``offline``; best effort."""
        try:
            await asyncio.wait_for(
                self._call("PUT", f"{self._instance_url}/status", {"status": state}),
                _STATE_TIMEOUT,
            )
        except (RegistrationError, TimeoutError) as exc:
            logger.warning("could not tell the scheduler %s: %s", state, exc)

    async def _register(self) -> None:
        s = self._settings
        body: dict[str, Any] = {
            "name": s.executor_name,
            "instance_id": s.instance_id,
            "base_url": s.advertise_url,
            "health_check_url": s.advertise_url + "/health",
            "tasks": [
                {"task_name": name, **({"cron_expression": cron} if cron else {})}
                for name, cron in s.tasks
            ],
            "heartbeat_seconds": s.heartbeat_seconds,
        }
        if s.namespace:
            body["namespace"] = s.namespace
        status, answer = await self._call("POST", f"{self._prefix}/register", body)
        if status not in (200, 201):
            raise RegistrationError(f"register answered HTTP {status}: {_error(answer)}")
        token = answer.get("token") if isinstance(answer, dict) else None
        if isinstance(token, str) and token:
            self._holder.use_token(token)
            self._store(token)
        self._registered = True
        self.registrations += 1
        logger.info(
            "registered with the scheduler",
            extra={"executor": answer.get("executor"), "instance": s.instance_id},
        )

    async def _heartbeat(self) -> None:
        status, answer = await self._call("POST", f"{self._instance_url}/heartbeat", None)
        if status == 404:
            self._registered = False
            logger.info("the scheduler does not know this instance any more: registering again")
            return
        if status != 200:
            raise RegistrationError(f"heartbeat answered HTTP {status}: {_error(answer)}")
        self.heartbeats += 1

    async def _call(self, method: str, url: str, body: Any) -> tuple[int, Any]:
        headers = {}
        if self._settings.api_token:
            headers["Authorization"] = f"Bearer {self._settings.api_token}"
        try:
            async with self._session.request(
                method, url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
            ) as resp:
                try:
                    answer = await resp.json(content_type=None)
                except ValueError:
                    answer = None
                return resp.status, answer
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RegistrationError(f"{method} {url}: {exc!r}") from None

    def _store(self, token: str) -> None:
        path = self._spool_dir / TOKEN_FILE
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(token)
        except OSError as exc:
            logger.warning("could not store the dispatch token in %s: %s", path, exc)


def _error(answer: Any) -> str:
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        return str(answer["error"])
    return "no error message"

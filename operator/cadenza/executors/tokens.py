"""Dispatch tokens: each Executor's own Secret (made and owned by the operator), read and cached.

Invariants:
- The token comes only from the Secret :mod:`cadenza.kube.token_secrets` makes for the Executor
  and that carries its ownerReference; ``spec.tokenSecretRef`` names no other Secret (the spec
  reader refuses any other name), so an Executor cannot borrow somebody else's token.
- A token is read from the API server at most once per ``refresh_seconds`` per Executor, so
  rotating the Secret takes effect within that time; after a failed read, or after
  :meth:`TokenSource.invalidate` (a sidecar answered 401, or the Executor's
  ``cadenza.dev/rotate-token`` changed), the next call reads again at once.
- Rotation: each read passes the Executor's ``cadenza.dev/rotate-token`` to
  :meth:`~cadenza.kube.token_secrets.TokenSecrets.ensure`, which rotates the Secret once per
  new value. The token answered carries the Secret's ``previous-token`` while ``rotated-at`` is
  less than ``grace_seconds`` old (measured at each call), for the dispatch client's one retry
  after a 401; a ``previous-token`` without a readable ``rotated-at`` is never offered.
- A transient read failure (API server unreachable, 5xx) keeps serving the last good token: a
  blip of the API server must not take every pod of the Executor out of service. A Secret the
  Executor does not own, or one without a usable token, is final and raises
  :class:`TokenUnavailable`.
- Concurrent callers for one Executor share one read.

WARNING: the Kubernetes client blocks; reads run in a thread. RBAC: ``get``, ``create`` and
``patch`` on ``secrets`` in the watched namespaces.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from cadenza.dispatch.credentials import DispatchToken
from cadenza.executors.spec import TokenRef
from cadenza.kube import objects, token_secrets
from cadenza.kube.views import ExecutorView

log = logging.getLogger(__name__)

_Key = tuple[str, str, str]
"""(namespace, Executor name, Executor uid)."""
_REMAKE = "delete the Secret and the operator makes a new one"


class TokenUnavailable(Exception):
    """The Executor names a dispatch token that cannot be read; the message says how to fix it."""

    def __init__(self, message: str, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclasses.dataclass(frozen=True)
class Credentials:
    """What an Executor's Secret holds: its token, and the one before with the rotation time."""

    current: str
    previous: str | None = None
    rotated_at: datetime | None = None

    def offered(self, now: datetime, grace_seconds: float) -> DispatchToken:
        """The token to send at ``now``, with the previous one while its grace lasts."""
        rotated = self.rotated_at
        fresh = rotated is not None and now < rotated + timedelta(seconds=grace_seconds)
        return DispatchToken(self.current, self.previous if fresh else None)


class TokenSource:
    def __init__(
        self,
        client: objects.ApiClient,
        *,
        refresh_seconds: float = 30.0,
        grace_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``grace_seconds``: how long after a rotation the previous token is still offered."""
        self._secrets = token_secrets.TokenSecrets(client)
        self._refresh_seconds = refresh_seconds
        self._grace_seconds = grace_seconds
        self._clock = clock
        self._wall_clock = wall_clock
        self._cache: dict[_Key, tuple[Credentials, float]] = {}
        self._stale: set[_Key] = set()
        self._locks: dict[_Key, asyncio.Lock] = {}

    async def token(self, executor: ExecutorView) -> DispatchToken:
        """The Executor's dispatch token, from its own Secret (made when missing, rotated when
        its ``cadenza.dev/rotate-token`` asks), with the previous one within its grace.

        Raises :class:`TokenUnavailable` when the Secret cannot be read and no good token is
        known, or is not the Executor's own, or holds no usable token.
        """
        key = (executor.namespace, executor.name, executor.uid)
        found = self._fresh(key)
        if found is None:
            lock = self._locks.setdefault(key, asyncio.Lock())
            async with lock:
                # Another caller may have read it while we waited.
                found = self._fresh(key) or await self._read(key, executor.rotate_token)
        return found.offered(self._wall_clock(), self._grace_seconds)

    def invalidate(self, executor: ExecutorView) -> None:
        """Read the Executor's token again on the next call (a sidecar refused the cached one)."""
        self._stale.add((executor.namespace, executor.name, executor.uid))

    def forget(self, executor: ExecutorView) -> None:
        """The Executor went: its cached token and read lock go too (memory per deleted
        Executor returns)."""
        key = (executor.namespace, executor.name, executor.uid)
        self._cache.pop(key, None)
        self._stale.discard(key)
        self._locks.pop(key, None)

    def _fresh(self, key: _Key) -> Credentials | None:
        cached = self._cache.get(key)
        if cached is None or key in self._stale:
            return None
        value, read_at = cached
        return value if self._clock() - read_at < self._refresh_seconds else None

    async def _read(self, key: _Key, rotation: str | None) -> Credentials:
        try:
            value = await asyncio.to_thread(read_credentials, self._secrets, *key, rotation)
        except TokenUnavailable as exc:
            cached = self._cache.get(key)
            if exc.permanent or cached is None:
                self._cache.pop(key, None)
                raise
            # Serve the last good token, and try again on the next call.
            self._stale.add(key)
            log.warning("%s; still using the token read before", exc)
            return cached[0]
        self._cache[key] = (value, self._clock())
        self._stale.discard(key)
        return value


def read_token(secrets: token_secrets.TokenSecrets, namespace: str, executor: str, uid: str) -> str:
    """The current token of the Executor's own Secret, which is made when missing; blocking.

    Raises :class:`TokenUnavailable`: permanent for a Secret the Executor does not own or one
    without a usable token, transient when the API server refuses or fails.
    """
    return read_credentials(secrets, namespace, executor, uid).current


def read_credentials(
    secrets: token_secrets.TokenSecrets,
    namespace: str,
    executor: str,
    uid: str,
    rotation: str | None = None,
) -> Credentials:
    """As :func:`read_token`, with the previous token and the rotation's time, rotating the
    Secret first when ``rotation`` asks (see :mod:`cadenza.kube.token_secrets`)."""
    name = token_secrets.secret_name(executor)
    where = f"Secret {namespace}/{name}"
    try:
        data = secrets.ensure(namespace, executor, uid, rotation)
    except token_secrets.NotOwned as exc:
        raise TokenUnavailable(str(exc), permanent=True) from None
    except objects.ApiError as exc:
        raise TokenUnavailable(
            f"reading or making {where} failed: HTTP {exc.status} {exc.message}", permanent=False
        ) from None
    except Exception as exc:  # urllib3 and socket errors: the API server is unreachable
        raise TokenUnavailable(f"reading {where} failed: {exc}", permanent=False) from None
    current = decode_token(where, data, TokenRef(name, token_secrets.TOKEN_KEY), _REMAKE)
    try:
        previous = decode_token(where, data, TokenRef(name, token_secrets.PREVIOUS_KEY))
        stamp = decode_token(where, data, TokenRef(name, token_secrets.ROTATED_AT_KEY))
        rotated_at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except (TokenUnavailable, ValueError):
        return Credentials(current)  # never rotated, or not readably: no fallback
    if rotated_at.tzinfo is None:
        rotated_at = rotated_at.replace(tzinfo=UTC)
    return Credentials(current, previous, rotated_at)


def decode_token(
    where: str, data: dict[str, str], ref: TokenRef, fix: str = "set spec.tokenSecretRef.key"
) -> str:
    """The token under ``ref.key`` of a Secret's base64 ``data``; whitespace around it (a file
    written with a trailing newline) is dropped, as the sidecar does with its token file.
    ``fix`` ends the message when the key is missing."""
    if ref.key not in data:
        present = ", ".join(sorted(data)) or "none"
        raise TokenUnavailable(
            f"{where} has no key {ref.key!r} (keys: {present}); {fix}", permanent=True
        )
    try:
        token = base64.b64decode(data[ref.key], validate=True).decode().strip()
    except (binascii.Error, UnicodeDecodeError):
        raise TokenUnavailable(
            f"{where}: key {ref.key!r} is not base64 of UTF-8 text", permanent=True
        ) from None
    if not token:
        raise TokenUnavailable(f"{where}: key {ref.key!r} is empty", permanent=True)
    return token

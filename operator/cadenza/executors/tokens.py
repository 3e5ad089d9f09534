"""Dispatch tokens: each Executor's own Secret (made and owned by the operator), read and cached.

Invariants:
- The token comes only from the Secret :mod:`cadenza.kube.token_secrets` makes for the Executor
  and that carries its ownerReference; ``spec.tokenSecretRef`` names no other Secret (the spec
  reader refuses any other name), so an Executor cannot borrow somebody else's token.
- A token is read from the API server at most once per ``refresh_seconds`` per Executor, so
  rotating the Secret takes effect within that time; after a failed read, or after
  :meth:`TokenSource.invalidate` (a sidecar answered 401), the next call reads again at once.
- A transient read failure (API server unreachable, 5xx) keeps serving the last good token: a
  blip of the API server must not take every pod of the Executor out of service. A Secret the
  Executor does not own, or one without a usable token, is final and raises
  :class:`TokenUnavailable`.
- Concurrent callers for one Executor share one read.

WARNING: the Kubernetes client blocks; reads run in a thread. RBAC: ``get`` and ``create`` on
``secrets`` in the watched namespaces.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Callable

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


class TokenSource:
    def __init__(
        self,
        client: objects.ApiClient,
        *,
        refresh_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secrets = token_secrets.TokenSecrets(client)
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._cache: dict[_Key, tuple[str, float]] = {}
        self._stale: set[_Key] = set()
        self._locks: dict[_Key, asyncio.Lock] = {}

    async def token(self, executor: ExecutorView) -> str:
        """The Executor's dispatch token, from its own Secret (made when missing).

        Raises :class:`TokenUnavailable` when the Secret cannot be read and no good token is
        known, or is not the Executor's own, or holds no usable token.
        """
        key = (executor.namespace, executor.name, executor.uid)
        fresh = self._fresh(key)
        if fresh is not None:
            return fresh
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            fresh = self._fresh(key)  # another caller may have read it while we waited
            if fresh is not None:
                return fresh
            return await self._read(key)

    def invalidate(self, executor: ExecutorView) -> None:
        """Read the Executor's token again on the next call (a sidecar refused the cached one)."""
        self._stale.add((executor.namespace, executor.name, executor.uid))

    def _fresh(self, key: _Key) -> str | None:
        cached = self._cache.get(key)
        if cached is None or key in self._stale:
            return None
        value, read_at = cached
        return value if self._clock() - read_at < self._refresh_seconds else None

    async def _read(self, key: _Key) -> str:
        try:
            value = await asyncio.to_thread(read_token, self._secrets, *key)
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
    """The token of the Executor's own Secret, which is made when missing; blocking.

    Raises :class:`TokenUnavailable`: permanent for a Secret the Executor does not own or one
    without a usable token, transient when the API server refuses or fails.
    """
    name = token_secrets.secret_name(executor)
    where = f"Secret {namespace}/{name}"
    try:
        data = secrets.ensure(namespace, executor, uid)
    except token_secrets.NotOwned as exc:
        raise TokenUnavailable(str(exc), permanent=True) from None
    except objects.ApiError as exc:
        raise TokenUnavailable(
            f"reading or making {where} failed: HTTP {exc.status} {exc.message}", permanent=False
        ) from None
    except Exception as exc:  # urllib3 and socket errors: the API server is unreachable
        raise TokenUnavailable(f"reading {where} failed: {exc}", permanent=False) from None
    return decode_token(where, data, TokenRef(name, token_secrets.TOKEN_KEY), _REMAKE)


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

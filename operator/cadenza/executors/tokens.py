"""Dispatch tokens: the Secret an Executor's ``spec.tokenSecretRef`` names, read and cached.

Invariants:
- A token is read from the API server at most once per ``refresh_seconds`` per Secret and key, so
  rotating the Secret takes effect within that time; after a failed read, or after
  :meth:`TokenSource.invalidate` (a sidecar answered 401), the next call reads again at once.
- A transient read failure (API server unreachable, 5xx) keeps serving the last good token: a
  blip of the API server must not take every pod of the Executor out of service. A Secret or key
  that is gone is final and raises :class:`TokenUnavailable`.
- Concurrent callers for one Secret share one read.
- An Executor without ``tokenSecretRef`` gets ``None`` (its sidecars accept any caller); that is
  logged as a warning once per Executor.

WARNING: the Kubernetes client blocks; reads run in a thread. RBAC: ``get`` on ``secrets`` in the
watched namespaces.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Callable

from cadenza.executors.spec import TokenRef, parse_spec
from cadenza.kube import objects
from cadenza.kube.views import ExecutorView

log = logging.getLogger(__name__)

_Key = tuple[str, str, str]
"""(namespace, secret name, data key)."""


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
        self._objects = objects.Objects(client)
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._cache: dict[_Key, tuple[str, float]] = {}
        self._stale: set[_Key] = set()
        self._locks: dict[_Key, asyncio.Lock] = {}
        self._warned: set[str] = set()

    async def token(self, executor: ExecutorView) -> str | None:
        """The Executor's dispatch token; None when it names no Secret.

        Raises :class:`TokenUnavailable` when the Secret or key cannot be read and no good token
        is known (or the Secret or key is gone).
        """
        ref = parse_spec(executor.spec).token_ref
        if ref is None:
            if executor.uid not in self._warned:
                self._warned.add(executor.uid)
                log.warning(
                    "executor %s/%s has no spec.tokenSecretRef: dispatches are sent without a "
                    "token and its sidecars accept any caller",
                    executor.namespace,
                    executor.name,
                )
            return None
        key = (executor.namespace, ref.name, ref.key)
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
        ref = parse_spec(executor.spec).token_ref
        if ref is not None:
            self._stale.add((executor.namespace, ref.name, ref.key))

    def _fresh(self, key: _Key) -> str | None:
        cached = self._cache.get(key)
        if cached is None or key in self._stale:
            return None
        value, read_at = cached
        return value if self._clock() - read_at < self._refresh_seconds else None

    async def _read(self, key: _Key) -> str:
        try:
            value = await asyncio.to_thread(self._read_secret, *key)
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

    def _read_secret(self, namespace: str, name: str, key: str) -> str:
        where = f"Secret {namespace}/{name} (spec.tokenSecretRef)"
        try:
            data = self._objects.secret_data(namespace, name)
        except objects.ApiError as exc:
            if exc.status == 404:
                raise TokenUnavailable(
                    f"{where} does not exist: create it with the dispatch token under {key!r}",
                    permanent=True,
                ) from None
            raise TokenUnavailable(
                f"reading {where} failed: HTTP {exc.status} {exc.reason}", permanent=False
            ) from None
        except Exception as exc:  # urllib3 and socket errors: the API server is unreachable
            raise TokenUnavailable(f"reading {where} failed: {exc}", permanent=False) from None
        return decode_token(where, data, TokenRef(name, key))


def decode_token(where: str, data: dict[str, str], ref: TokenRef) -> str:
    """The token under ``ref.key`` of a Secret's base64 ``data``; whitespace around it (a file
    written with a trailing newline) is dropped, as the sidecar does with its token file."""
    if ref.key not in data:
        present = ", ".join(sorted(data)) or "none"
        raise TokenUnavailable(
            f"{where} has no key {ref.key!r} (keys: {present}); set spec.tokenSecretRef.key",
            permanent=True,
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

"""Who calls the REST API and whether they may: Kubernetes tokens and RBAC, asked per request.

Every API route (not the probes, ``/metrics``, ``/api/v1/replicas`` or the callbacks) calls
:meth:`Guard.check` before it touches anything: the bearer token goes to TokenReview, the
question "may this user do VERB on this Task" to SubjectAccessReview. Only then does the operator
act, with its own identity.

Both answers are cached for ``auth_cache_seconds`` (default 5 s) in bounded LRU maps, so a
client paging quickly costs the API server one review of each kind per few seconds. The token is
kept only as its sha256. A revoked token or RoleBinding takes effect within the TTL.

Answers: no or malformed ``Authorization`` header, or a token the API server does not accept:
401. Authenticated but not allowed: 403. The API server unreachable for a review: 503.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, NoReturn, TypeVar

from aiohttp import web

from cadenza.api.errors import Problem
from cadenza.kube.objects import ApiError
from cadenza.kube.reviews import Access, Identity, Reviews

V = TypeVar("V")
_MISSING = object()
_IDENTITY = "cadenza.identity"


class TtlCache(Generic[V]):
    """At most ``size`` entries, each valid for ``ttl`` seconds; the least recently used go
    first. ``ttl`` 0 keeps nothing."""

    def __init__(self, ttl: float, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl, self._size, self._clock = ttl, size, clock
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()

    def get(self, key: Hashable) -> V | object:
        """The value, or ``_MISSING`` when absent or expired."""
        found = self._entries.get(key)
        if found is None:
            return _MISSING
        if found[0] <= self._clock():
            del self._entries[key]
            return _MISSING
        self._entries.move_to_end(key)
        return found[1]

    def put(self, key: Hashable, value: V) -> None:
        if self._ttl <= 0:
            return
        self._entries[key] = (self._clock() + self._ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class Guard:
    def __init__(self, reviews: Reviews, ttl: float, size: int) -> None:
        self._reviews = reviews
        self._tokens: TtlCache[Identity | None] = TtlCache(ttl, size)
        self._decisions: TtlCache[bool] = TtlCache(ttl, size)

    async def check(self, request: web.Request, access: Access) -> Identity:
        """The caller, once allowed ``access``; raises :class:`Problem` 401/403/503."""
        who = await self.identify(request)
        key = (who, access)
        allowed = self._decisions.get(key)
        if allowed is _MISSING:
            allowed = await _review(lambda: self._reviews.allowed(who, access))
            self._decisions.put(key, bool(allowed))
        if not allowed and access.path:
            raise Problem(403, f'{who.username} may not "{access.verb}" {access.path}')
        if not allowed:
            where = f"in namespace {access.namespace}" if access.namespace else "cluster-wide"
            kind = f"{access.resource}.cadenza.dev"
            what = f"{kind}/{access.name}" if access.name else kind
            raise Problem(403, f'{who.username} may not "{access.verb}" {what} {where}')
        return who

    # A run is addressed by its id alone: the answers must tell a caller who may not see it
    # nothing about it. Refused, the message names the run only (not its Task or namespace);
    # a run that does not exist is 404 only to a caller allowed the verb on every Task (who
    # could list it anyway), and to any other caller the same 403 as an existing one.

    async def check_run(
        self, request: web.Request, verb: str, run: int, namespace: str, task: str
    ) -> Identity:
        """The caller, once allowed ``verb`` on run ``run``'s Task; 401/403 otherwise."""
        try:
            return await self.check(request, Access(verb, namespace, task))
        except Problem as problem:
            if problem.status != 403:
                raise
            who = await self.identify(request)
        raise Problem(403, f'{who.username} may not "{verb}" execution {run}')

    async def missing_run(self, request: web.Request, verb: str, run: int) -> NoReturn:
        """Run ``run`` does not exist: 404 to a caller allowed ``verb`` on every Task, else 403."""
        await self.check_run(request, verb, run, "", "")
        raise Problem(404, f"execution {run} not found")

    async def identify(self, request: web.Request) -> Identity:
        """The caller (401 otherwise); reviewed once per request, whoever asks again."""
        known = request.get(_IDENTITY)
        if isinstance(known, Identity):
            return known
        who = await self._review_token(request)
        request[_IDENTITY] = who
        return who

    async def _review_token(self, request: web.Request) -> Identity:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Problem(
                401, "send a Kubernetes token as 'Authorization: Bearer <token>'", "Authorization"
            )
        key = hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()
        who = self._tokens.get(key)
        if who is _MISSING:
            who = await _review(lambda: self._reviews.authenticate(token))
            self._tokens.put(key, who if isinstance(who, Identity) else None)
        if not isinstance(who, Identity):
            raise Problem(401, "the Kubernetes API server does not accept this token",
                          "Authorization")  # fmt: skip
        return who


async def _review(ask: Callable[[], V]) -> V:
    try:
        return await asyncio.to_thread(ask)
    except ApiError as exc:
        raise Problem(503, f"cannot check the caller with the API server: {exc.message}") from None

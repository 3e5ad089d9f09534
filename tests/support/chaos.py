"""The operator's Service as the sidecars reach it for callbacks, in the test process, with
faults on demand: duplicated, reordered and late callbacks, and a storm of held-back ones.

Every replica advertises this address as its callback URL (``CADENZA_HTTP_ADVERTISE_URL``), so
every callback a sidecar sends passes through here and is forwarded, as a Service's endpoints
would, to a replica that answers (each replica serves the callback API). Without faults it is a
plain pass-through.

Invariants: the sidecar always gets the answer of a forwarded original, never of a copy; copies
are fire-and-forget; held callbacks are forwarded, all at once, when :meth:`release` is called
or the service stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from cadenza.devenv.controlplane import free_port

_HOP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


@dataclass
class Faults:
    duplicate: bool = False
    """Each callback is forwarded twice at once."""
    jitter_seconds: float = 0.0
    """Each callback waits a random time up to this before it is forwarded: they overtake."""
    late_copy_seconds: float = 0.0
    """A copy of each callback is forwarded again this long after (0: none)."""


class CallbackService:
    def __init__(self, upstreams: Callable[[], list[str]]) -> None:
        """``upstreams`` answers the base URLs of the replicas to try, in order."""
        self._upstreams = upstreams
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.faults = Faults()
        self.forwarded = 0
        self.copies = 0
        self.held = 0
        """Requests held back now (a sidecar sends its next batch only when one is answered:
        while held, its results pile up in its spool)."""
        self._loop = asyncio.new_event_loop()
        self._release: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="callback-service")
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._copies: set[asyncio.Task[None]] = set()

    # -- controls (from the test's thread) ---------------------------------------------------

    def hold(self) -> None:
        """Keep every callback from now on until :meth:`release`."""
        self._call(self._hold)

    def release(self) -> None:
        """Forward every held callback at once: a storm."""
        self._call(self._do_release)

    def _call(self, fn: Callable[[], None]) -> None:
        done = threading.Event()

        def run() -> None:
            fn()
            done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(5)

    def _hold(self) -> None:
        if self._release is None:
            self._release = asyncio.Event()

    def _do_release(self) -> None:
        if self._release is not None:
            self._release.set()
            self._release = None

    # -- the proxy (on its own loop) ---------------------------------------------------------

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        path = request.path_qs
        release = self._release
        if release is not None:
            self.held += 1
            await release.wait()
            self.held -= 1
        faults = self.faults
        if faults.jitter_seconds:
            await asyncio.sleep(random.uniform(0, faults.jitter_seconds))
        if faults.duplicate:
            self._copy(request.method, path, headers, body, 0.0)
        if faults.late_copy_seconds:
            self._copy(request.method, path, headers, body, faults.late_copy_seconds)
        status, answer, content_type = await self._send(request.method, path, headers, body)
        self.forwarded += 1
        return web.Response(status=status, body=answer, content_type=content_type)

    def _copy(
        self, method: str, path: str, headers: dict[str, str], body: bytes, after: float
    ) -> None:
        async def copy() -> None:
            await asyncio.sleep(after)
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                await self._send(method, path, headers, body)
                self.copies += 1

        task = asyncio.create_task(copy())
        self._copies.add(task)
        task.add_done_callback(self._copies.discard)

    async def _send(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, str | None]:
        assert self._session is not None
        failure: Exception | None = None
        upstreams = self._upstreams()
        random.shuffle(upstreams)  # as a Service spreads connections over its endpoints
        for base in upstreams:
            try:
                async with self._session.request(
                    method, base + path, headers=headers, data=body
                ) as resp:
                    return resp.status, await resp.read(), resp.content_type
            except (aiohttp.ClientError, TimeoutError) as exc:  # the next endpoint
                failure = exc
        return 503, f"no replica answered: {failure!r}".encode(), "text/plain"

    # -- life ---------------------------------------------------------------------------------

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5, connect=2))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        self._do_release()
        for task in list(self._copies):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def __enter__(self) -> CallbackService:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@contextlib.contextmanager
def faults(service: CallbackService, **faults: float | bool) -> Iterator[None]:
    """The service applies ``faults`` (see :class:`Faults`) inside the block."""
    service.faults = Faults(**faults)  # type: ignore[arg-type]
    try:
        yield
    finally:
        service.faults = Faults()

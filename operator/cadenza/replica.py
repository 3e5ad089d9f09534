"""One operator replica: kopf, the HTTP server, the leader election and, while leading, the
leader's work — wired together and shut down in order.

Start-up order matters: the database is checked and migrated, kopf fills the indexes, and only
once the indexes hold everything that existed at start does the replica campaign for the lock.
A leader that resynced the mirror from half-filled indexes would delete rows it had not seen yet.

Shutdown (SIGTERM, SIGINT): release the lock at once, from the signal handler's thread-safe
request to the election thread (so a follower takes over within a second whatever the rest of
the shutdown does), then stop the leader's work, deregister, stop kopf, close the HTTP server.
kopf puts its own signal handlers in place when it starts; the replica's own replace them before
it campaigns for the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import kopf
from aiohttp import web

from cadenza import console, tls
from cadenza.api import callback_batches, callbacks, probes, rest
from cadenza.core.ids import Epoch, ExecutionId
from cadenza.kube import client as kube_client
from cadenza.kube.handlers import build_registry
from cadenza.kube.hub import Hub
from cadenza.leader import Leader, LeaderContext
from cadenza.leadership import Leadership, LeaderState, StepDowns
from cadenza.metrics import Metrics
from cadenza.settings import Settings
from cadenza.store import engine as store_engine
from cadenza.store import fencing, instances, migrations
from cadenza.waiting import woken

log = logging.getLogger(__name__)

LeaderWork = Callable[[Epoch], Awaitable[None]]

PRUNE_AFTER_LEASES = 10
"""A replica silent for this many lease periods is gone: the leader removes its row."""
LEADER_STOP_SECONDS = 10.0
"""How long shutdown waits for the leader's work to end (the lock is free already)."""


class Replica:
    def __init__(self, settings: Settings, engine: Any, fire_engine: Any = None) -> None:
        self.settings = settings
        self.engine = engine
        self.fire_engine = fire_engine
        """The leader's fire lane's own pool (claims, dispatch records), apart from ``engine``."""
        self.hub = Hub()
        self.kube = kube_client.api_client(settings.kube)
        self.stopping = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._leader_task: asyncio.Task[None] | None = None
        self._state = LeaderState(leading=False)
        self._step_downs = StepDowns()
        self.on_signal: Callable[[], None] = self.stopping.set
        """What SIGTERM and SIGINT do once the replica campaigns (:func:`run` sets it)."""
        self.metrics = Metrics()
        self.leader: Leader | None = None
        self.leadership = Leadership(
            settings.leadership,
            settings.database.url,
            settings.instance_id,
            on_change=self._leadership_changed_threadsafe,
            connect_timeout=settings.database.connect_timeout,
        )

    # -- status -------------------------------------------------------------------------------

    def status(self) -> probes.ReplicaStatus:
        return probes.ReplicaStatus(
            instance=self.settings.instance_id,
            indexed=self.hub.listed,
            leading=self._state.leading,
            epoch=self._state.epoch,
        )

    # -- leadership ---------------------------------------------------------------------------

    def _leadership_changed_threadsafe(self, state: LeaderState) -> None:
        self._loop.call_soon_threadsafe(self._leadership_changed, state)

    def _leadership_changed(self, state: LeaderState) -> None:
        previous, self._state = self._state, state
        if previous.leading and self._leader_task is not None:
            self._leader_task.cancel()
            self._leader_task = None
        if state.leading and state.epoch is not None:
            self._leader_task = asyncio.create_task(
                self._lead(state.epoch), name=f"leader-epoch-{state.epoch}"
            )
        self._loop.create_task(self._heartbeat_once())

    async def _lead(self, epoch: Epoch) -> None:
        context = LeaderContext(
            self.settings,
            self.engine,
            self.hub,
            self.kube,
            self.metrics,
            self.leadership.lease_valid,
            self.fire_engine,
        )
        self.leader = Leader(context, epoch)
        self.metrics.leader.set(1)
        self.metrics.epoch.set(epoch)
        started = time.monotonic()
        try:
            await self.leader.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if _contains(exc, fencing.Fenced):
                log.warning("epoch %s was fenced off by a newer leader; stepping down", epoch)
                self.leadership.step_down()
                return
            cooldown = self._step_downs.after_failure(time.monotonic() - started)
            log.error(
                "leader work failed; stepping down for %.0fs so another replica can lead",
                cooldown,
                exc_info=exc,
            )
            self.leadership.step_down(cooldown)
        finally:
            self.leader = None
            self.metrics.leader.set(0)

    def callback_applied(self, run: ExecutionId) -> None:
        """A callback reached this replica: if it leads, look at the run now."""
        if self.leader is not None and self.leader.lifecycle is not None:
            self.leader.lifecycle.wake(run)

    # -- loops --------------------------------------------------------------------------------

    async def _heartbeat_once(self) -> None:
        state = self._state
        try:
            await asyncio.to_thread(self._heartbeat, state)
        except Exception as exc:
            log.warning("replica heartbeat failed: %s", exc)

    def _heartbeat(self, state: LeaderState) -> None:
        me = self.settings.instance_id
        role = instances.LEADER if state.leading else instances.STANDBY
        if not instances.heartbeat(self.engine, me, role, state.epoch):
            log.warning("this replica's registry row was gone (pruned while paused?): again")
            _register(self.engine, self.settings)
            instances.heartbeat(self.engine, me, role, state.epoch)
        if state.leading:
            lease = self.settings.leadership.lease_seconds
            gone = instances.prune(self.engine, timedelta(seconds=PRUNE_AFTER_LEASES * lease))
            if gone:
                log.info("removed %d replicas silent for %d leases", gone, PRUNE_AFTER_LEASES)

    async def heartbeats(self) -> None:
        interval = self.settings.leadership.lease_seconds / 3
        while not self.stopping.is_set():
            await self._heartbeat_once()
            await woken(self.stopping, interval)

    async def wait_until_listed(self) -> None:
        """Wait until kopf's indexes hold every object that existed when this started."""
        pause = 0.5
        while not self.stopping.is_set():
            try:
                expected = await asyncio.to_thread(
                    kube_client.list_uids, self.kube, self.settings.kube.namespaces
                )
                missing = expected - self.hub.uids()
                if not missing:
                    self.hub.listed = True
                    log.info("indexes filled (%d objects)", len(expected))
                    return
                log.debug("waiting for %d objects to be indexed", len(missing))
                pause = 0.5
            except Exception as exc:
                log.warning(
                    "listing for the readiness check failed (again in %.0fs): %s", pause, exc
                )
                pause = min(pause * 2, 30.0)
            await woken(self.stopping, pause)

    async def campaign(self) -> None:
        await self.wait_until_listed()
        if not self.stopping.is_set():
            # kopf's signal handlers are in place by now (its indexes are filled): from here on
            # a signal must free the lock first, not after kopf has wound down.
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self.on_signal)
            self.leadership.start()

    async def shutdown(self) -> None:
        self.leadership.stop_soon()
        if self._leader_task is not None:
            self._leader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._leader_task, LEADER_STOP_SECONDS)
        await asyncio.to_thread(self.leadership.stop)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(instances.forget, self.engine, self.settings.instance_id)


async def serve_http(replica: Replica) -> web.AppRunner:
    app = web.Application(middlewares=[rest.middleware])
    api = rest.context(
        replica.settings.api,
        replica.engine,
        replica.kube,
        dispatch_ca_file=replica.settings.dispatch.ca_file,
        dispatch_token_grace_seconds=replica.settings.scheduling.dispatch_token_grace_seconds,
    )
    app.add_routes(rest.routes(api))
    app.add_routes(probes.routes(replica.status))
    app.add_routes(console.routes())
    replicas = probes.replica_routes(replica.engine, replica.settings.leadership.lock_name)
    app.add_routes(rest.guarded(api, [*replicas, replica.metrics.route()]))
    grace = replica.settings.api.callback_grace_seconds
    applied = replica.callback_applied
    # Callbacks may hold half the pool at most: a storm of them must not starve the leader.
    gate = asyncio.Semaphore(max(1, replica.settings.database.pool_size // 2))
    late = replica.metrics.start_delay.observe
    for route in (callbacks.routes, callback_batches.routes):
        app.add_routes(
            route(replica.engine, applied, grace_seconds=grace, gate=gate, on_started=late)
        )
    http = replica.settings.http
    context = _serving_context(app, http.tls_cert_file, http.tls_key_file)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, http.host, http.port, ssl_context=context)
    await site.start()
    log.info("HTTP%s server on %s:%s", "S" if context else "", http.host, http.port)
    return runner


def _serving_context(
    app: web.Application, cert: Path | None, key: Path | None
) -> ssl.SSLContext | None:
    """The HTTPS context when the settings give a pair, kept fresh while ``app`` lives."""
    if cert is None or key is None:
        return None
    context = tls.server_context(cert, key)

    async def renewals(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(tls.keep_fresh(context, cert, key), name="http-tls")
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    app.cleanup_ctx.append(renewals)
    return context


def create_engine(settings: Settings, pool_size: int | None = None) -> Any:
    """The pool, of ``CADENZA_DATABASE_POOL_SIZE`` connections unless ``pool_size`` says (no
    connection is made yet)."""
    return store_engine.create_engine(
        settings.database.url,
        pool_size=settings.database.pool_size if pool_size is None else pool_size,
        connect_timeout=settings.database.connect_timeout,
        # A frozen replica's pooled session must not outlive its leader lock by much: it may hold
        # the share lock of a leader transaction that the next leader's epoch bump waits for.
        session_wait_timeout=settings.leadership.lease_seconds,
    )


async def prepare_database(settings: Settings, engine: Any, stopping: asyncio.Event) -> bool:
    """Wait while the database is unreachable, then migrate; raise on a wrong DSN. False when
    asked to stop while waiting."""
    delay = 1.0
    while True:
        try:
            await asyncio.to_thread(store_engine.check, engine)
            break
        except store_engine.DatabaseUnavailable as exc:
            if exc.permanent:
                raise
            log.warning("database unavailable, retrying in %.0fs: %s", delay, exc)
            await woken(stopping, delay)
            if stopping.is_set():
                return False
            delay = min(delay * 2, 30.0)
    directory = settings.database.migrations_dir or migrations.DEFAULT_SQL_DIR
    applied = await asyncio.to_thread(migrations.migrate, engine, directory)
    if applied:
        log.info("applied migrations %s", ", ".join(applied))
    return True


async def run(settings: Settings) -> int:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(
        ThreadPoolExecutor(settings.thread_pool_size, thread_name_prefix="cadenza-io")
    )
    engine = create_engine(settings)
    # One connection of its own for the leader's claims and dispatch records: a burst of
    # callbacks, status reads or mirror writes holding the shared pool never delays a tick.
    fire_engine = create_engine(settings, pool_size=1)
    replica = Replica(settings, engine, fire_engine)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, replica.stopping.set)
    # Probes answer while the database is awaited: a liveness probe must not restart a replica
    # for an outage of something else (readiness stays false until the indexes are filled).
    runner = await serve_http(replica)
    try:
        if not await prepare_database(settings, engine, replica.stopping):
            return 0
    except BaseException:
        await runner.cleanup()
        raise
    await asyncio.to_thread(_register, engine, settings)
    kopf_stop: asyncio.Future[None] = loop.create_future()

    def on_signal() -> None:
        replica.leadership.stop_soon()
        replica.stopping.set()

    replica.on_signal = on_signal
    namespaces = settings.kube.namespaces
    tasks = [
        asyncio.create_task(
            kopf.operator(
                registry=build_registry(settings, replica.hub),
                standalone=True,
                clusterwide=not namespaces,
                namespaces=namespaces,
                stop_flag=kopf_stop,
            ),
            name="kopf",
        ),
        asyncio.create_task(replica.heartbeats(), name="heartbeats"),
        asyncio.create_task(replica.campaign(), name="campaign"),
    ]
    stopper = asyncio.create_task(replica.stopping.wait(), name="stopper")
    done, _ = await asyncio.wait([tasks[0], stopper], return_when=asyncio.FIRST_COMPLETED)
    exit_code = 0
    # kopf installs its own SIGTERM/SIGINT handlers, so a signal usually ends kopf first.
    if tasks[0] in done and tasks[0].exception() is not None:
        log.error("kopf stopped: %r", tasks[0].exception())
        exit_code = 1
    log.info("shutting down")
    replica.stopping.set()
    await replica.shutdown()
    if not kopf_stop.done():
        kopf_stop.set_result(None)
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 10)
    await runner.cleanup()
    await asyncio.to_thread(engine.dispose)
    await asyncio.to_thread(fire_engine.dispose)
    return exit_code


def _register(engine: Any, settings: Settings) -> None:
    instances.register(
        engine,
        settings.instance_id,
        socket.gethostname(),
        os.getpid(),
        settings.http.advertise_url,
    )


def _contains(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``exc`` is, or (in an exception group) holds, an exception of ``kind``."""
    if isinstance(exc, kind):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_contains(inner, kind) for inner in exc.exceptions)
    return False

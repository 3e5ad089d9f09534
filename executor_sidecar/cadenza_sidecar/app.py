"""The sidecar's lifecycle: wire the parts, serve, and drain on SIGTERM.

Start: prepare the spool, remember spooled results (idempotency) and re-send them, watch the
token file for rotations and the TLS pair for renewals, then listen (HTTPS when configured).
Stop (SIGTERM or SIGINT): /healthz turns 503 and new runs are refused; runs in flight get the
grace, then are cancelled and reported; pending callbacks get the flush time; whatever is still
undelivered stays in the spool for the next start. The process then exits 0.

Invariant: the HTTP server keeps answering (GET, DELETE, /healthz) during the whole drain, so
the operator can watch it happen; it closes only after the runs and callbacks are settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal

import aiohttp
from aiohttp import web

from cadenza_sidecar import dispatch_tokens, registration, runner, server, tls
from cadenza_sidecar.callbacks import CallbackSender
from cadenza_sidecar.runs import RunRegistry
from cadenza_sidecar.settings import Settings
from cadenza_sidecar.spool import Spool

logger = logging.getLogger(__name__)


async def _stop_requested() -> signal.Signals:
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def on_signal(signum: signal.Signals) -> None:
        if not received.done():
            received.set_result(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return await received
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _handler_session(settings: Settings) -> aiohttp.ClientSession | None:
    if settings.handler.url is None:
        return None
    # No total timeout: the run's own timeoutSeconds bounds the call.
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        connector=aiohttp.TCPConnector(limit=max(100, settings.runs.max_concurrency)),
    )


async def serve(settings: Settings) -> int:
    """Runs the sidecar until SIGTERM/SIGINT; returns the process exit status."""
    spool = Spool(settings.spool)
    try:
        spool.prepare()
        leftovers = spool.load()
    except OSError as exc:
        logger.error(
            "cannot use the spool directory",
            extra={"spool": str(spool.directory), "reason": repr(exc)},
        )
        return 1
    token = settings.auth.token
    if settings.registration is not None:
        # Until registered: the token of an earlier registration, else one nobody knows.
        token = registration.stored_token(spool.directory) or token or secrets.token_urlsafe(32)
    if not settings.callbacks.allowed_urls:
        logger.warning(
            "no --callback-allow: a dispatch may name any callback URL, and the run's result"
            " is POSTed there"
        )
    if token is None:  # only with --insecure-no-auth: settings refuse it otherwise
        logger.warning(
            "no dispatch token configured (--insecure-no-auth): /v1/* accepts unauthenticated"
            " requests, so any caller that reaches this port can run handlers"
        )

    async with contextlib.AsyncExitStack() as stack:
        # Callbacks and registration both reach the operator: one session, one trust.
        callback_ssl = tls.client_context(settings.callbacks.ca_file)
        callback_session = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=callback_ssl))
        )
        handler_session = _handler_session(settings)
        if handler_session is not None:
            await stack.enter_async_context(handler_session)
        callbacks = CallbackSender(settings.callbacks, callback_session, spool)
        registry = RunRegistry(
            settings.runs,
            runner.create(settings.handler, handler_session),
            settle=callbacks.accept,
            undelivered=callbacks.undelivered,
            reserve=spool.reserve,
            pod=settings.pod_name,
        )
        for report in leftovers:
            registry.remember(report)
        callbacks.resume(leftovers)

        tokens = (
            None
            if token is None
            else dispatch_tokens.DispatchTokens(token, settings.auth.grace_seconds)
        )
        token_file = settings.auth.token_file
        if tokens is not None and token_file is not None and settings.registration is None:
            # A registered sidecar's token comes from its registration, not from the file.
            watching = asyncio.create_task(
                dispatch_tokens.watch_file(tokens, token_file, settings.auth.poll_seconds),
                name="token-file",
            )
            stack.push_async_callback(_cancelled, watching)
        api = server.Api(
            registry,
            callbacks,
            pod=settings.pod_name,
            tokens=tokens,
            cancel_wait_seconds=settings.handler.kill_grace_seconds + 5,
            max_batch_items=settings.server.max_batch_items,
            max_batch_bytes=settings.server.max_batch_bytes,
            callbacks_allowed=settings.callbacks.allowed_urls,
        )
        web_runner = web.AppRunner(api.application(), handle_signals=False, access_log=None)
        await web_runner.setup()
        stack.push_async_callback(web_runner.cleanup)
        serving = settings.server.tls
        server_ssl = None
        if serving is not None:
            server_ssl = tls.server_context(serving.cert_file, serving.key_file)
            renewals = asyncio.create_task(
                tls.watch_pair(
                    server_ssl, serving.cert_file, serving.key_file, serving.poll_seconds
                ),
                name="tls-files",
            )
            stack.push_async_callback(_cancelled, renewals)
        site = web.TCPSite(
            web_runner, settings.server.listen, settings.server.port, ssl_context=server_ssl
        )
        try:
            await site.start()
        except OSError as exc:
            logger.error(
                "cannot listen",
                extra={
                    "listen": settings.server.listen,
                    "port": settings.server.port,
                    "reason": repr(exc),
                },
            )
            await callbacks.flush(0)
            return 1
        logger.info(
            "sidecar listening",
            extra={
                "listen": settings.server.listen,
                "port": settings.server.port,
                "tls": serving is not None,
                "pod": settings.pod_name,
                "mode": "http" if settings.handler.url else "command",
                "handlerUser": settings.handler.user.name if settings.handler.user else None,
                "capacity": settings.runs.max_concurrency,
                "spooled": len(leftovers),
                "spoolMaxFiles": settings.spool.max_files,
                "spoolMaxBytes": settings.spool.max_bytes,
            },
        )

        registrar: registration.Registrar | None = None
        registering: asyncio.Task[None] | None = None
        if settings.registration is not None:
            registrar = registration.Registrar(
                settings.registration, callback_session, api, spool.directory
            )
            registering = asyncio.create_task(registrar.run(), name="registration")

        signum = await _stop_requested()
        logger.info("draining", extra={"signal": signum.name, "inFlight": registry.in_flight})
        if registering is not None and registrar is not None:
            registering.cancel()
            await asyncio.gather(registering, return_exceptions=True)
            await registrar.set_state("draining")
        await registry.drain(settings.drain.grace_seconds)
        left = await callbacks.flush(settings.drain.flush_seconds)
        if registrar is not None:
            await registrar.set_state("offline")
        logger.info("drained; exiting", extra={"leftInSpool": left})
    return 0

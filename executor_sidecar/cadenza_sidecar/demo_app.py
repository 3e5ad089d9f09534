"""A tiny application container for demos and tests: the sidecar's ``--handler-url`` target.

``python -m cadenza_sidecar.demo_app --listen 127.0.0.2 --port 8080 --ledger /tmp/ledger.jsonl``
serves ``POST /run`` with the body the sidecar sends and picks a demo handler by its ``handler``:

- ``echo``: answers the payload.
- ``sleep``: sleeps ``payload["seconds"]``, then answers ``{"slept": seconds}``.
- ``fail``: answers 500.
- ``flaky``: answers 500 while ``attempt <= payload["failures"]``, then succeeds like ``echo``. The
  attempt number rather than a call count decides, so the outcome of every attempt of a given run
  is deterministic whichever pod or process serves it.
- anything else: 404 naming the known handlers.

Invariant: every call, whatever its handler and outcome, is appended to the ledger (one JSON line:
executionId, handler, attempt, time) before it is handled, so tests can count what really ran.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from cadenza_sidecar import logs

logger = logging.getLogger(__name__)

DemoHandler = Callable[[dict[str, Any]], Awaitable[web.Response]]


async def _echo(call: dict[str, Any]) -> web.Response:
    return web.json_response(call.get("payload"))


async def _sleep(call: dict[str, Any]) -> web.Response:
    payload = call.get("payload")
    seconds = payload.get("seconds") if isinstance(payload, dict) else None
    if not isinstance(seconds, int | float) or seconds < 0:
        return web.json_response(
            {"error": 'sleep needs payload {"seconds": <number>=0>}'}, status=400
        )
    await asyncio.sleep(seconds)
    return web.json_response({"slept": seconds})


async def _fail(call: dict[str, Any]) -> web.Response:
    return web.json_response({"error": "the fail handler always fails"}, status=500)


async def _flaky(call: dict[str, Any]) -> web.Response:
    payload = call.get("payload")
    failures = payload.get("failures", 1) if isinstance(payload, dict) else 1
    attempt = call.get("attempt", 1)
    if attempt <= failures:
        return web.json_response(
            {"error": f"flaky: attempt {attempt} of the first {failures} fails"}, status=500
        )
    return web.json_response(payload)


HANDLERS: dict[str, DemoHandler] = {
    "echo": _echo,
    "sleep": _sleep,
    "fail": _fail,
    "flaky": _flaky,
}


class DemoApp:
    def __init__(self, ledger: Path | None) -> None:
        self._ledger = ledger

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/run", self.run)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def run(self, request: web.Request) -> web.Response:
        try:
            call = await request.json()
        except ValueError:
            return web.json_response({"error": "body must be JSON"}, status=400)
        if not isinstance(call, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        self._record(call)
        handler = HANDLERS.get(str(call.get("handler")))
        if handler is None:
            known = ", ".join(sorted(HANDLERS))
            return web.json_response(
                {"error": f"unknown handler {call.get('handler')!r}; known: {known}"}, status=404
            )
        return await handler(call)

    def _record(self, call: dict[str, Any]) -> None:
        entry = {
            "executionId": call.get("executionId"),
            "handler": call.get("handler"),
            "attempt": call.get("attempt"),
            "scheduledAt": call.get("scheduledAt"),
            "task": call.get("task"),
            "epoch": call.get("epoch"),
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        logger.info("call", extra=entry)
        if self._ledger is not None:
            # One small O_APPEND write per line keeps lines whole even with concurrent calls.
            with self._ledger.open("a", encoding="utf-8") as ledger:
                ledger.write(json.dumps(entry) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cadenza-demo-app", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind (8080)")
    parser.add_argument("--ledger", type=Path, help="append every call to this JSON-lines file")
    args = parser.parse_args(argv)
    logs.configure("info")
    web.run_app(
        DemoApp(args.ledger).application(),
        host=args.listen,
        port=args.port,
        access_log=None,
        print=None,
        shutdown_timeout=1.0,  # a demo: do not hold SIGTERM hostage to sleeping handlers
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

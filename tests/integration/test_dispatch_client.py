"""The leader's dispatch client against real sidecars: every answer maps to the right outcome.

Each test starts a real ``cadenza-sidecar`` with the demo app behind it on its own loopback
address (127.0.0.20 and up), and a real aiohttp callback receiver on 127.0.0.1. What happened is
read from the demo app's ledger (one line per handler call) and from the callbacks received.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from cadenza.devenv.controlplane import free_port
from cadenza.devenv.pods import APP_PORT, SidecarPod
from cadenza.dispatch.client import DispatchClient, DispatchRequest, Outcome
from tests.support import async_wait_for, wait_for

CALLBACK_TOKEN = "per-run-callback-token"
NOBODY_LISTENS = "127.0.0.26"


@dataclass
class Receiver:
    """A real callback endpoint: records every callback body and its Authorization header.

    Batched callbacks (``batch_url``) are recorded item by item, with ``Bearer <item token>``
    as the header and the item's other fields as the body; ``batched`` lists their ids."""

    url: str
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    batched: list[str] = field(default_factory=list)

    @property
    def batch_url(self) -> str:
        return self.url.rsplit("/", 1)[0] + "/callback-batches"

    async def callback(self, execution_key: str, within: float = 30.0) -> dict[str, Any]:
        async def arrived() -> dict[str, Any] | None:
            found = [body for _, body in self.calls if body.get("executionId") == execution_key]
            return found[0] if found else None

        body: dict[str, Any] | None = await async_wait_for(
            arrived, within, f"the callback of {execution_key}"
        )
        assert body is not None
        return body


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    box = Receiver(url=f"http://127.0.0.1:{port}/api/v1/callbacks")

    async def handle(request: web.Request) -> web.Response:
        box.calls.append((request.headers.get("Authorization", ""), await request.json()))
        return web.json_response({"ok": True})

    async def handle_batch(request: web.Request) -> web.Response:
        items = (await request.json())["callbacks"]
        for item in items:
            token = item.pop("token")
            item.pop("callbackUrl")
            box.calls.append((f"Bearer {token}", item))
            box.batched.append(item["executionId"])
        return web.json_response({"results": [{"status": 200} for _ in items]})

    app = web.Application()
    app.router.add_post("/api/v1/callbacks", handle)
    app.router.add_post("/api/v1/callback-batches", handle_batch)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield box
    await runner.cleanup()


@pytest.fixture
async def client() -> AsyncIterator[DispatchClient]:
    dispatch = DispatchClient(connect_timeout=1.0, total_timeout=3.0)
    yield dispatch
    await dispatch.close()


@pytest.fixture
def sidecars(tmp_path: Path) -> Iterator[Callable[..., SidecarPod]]:
    """Start a fake pod's sidecar and demo app; every one is stopped when the test ends."""
    started: list[SidecarPod] = []

    def start(ip: str, **options: Any) -> SidecarPod:
        options.setdefault("token", f"dispatch-token-of-{ip}")  # every sidecar needs one
        pod = SidecarPod(
            name=f"worker-{ip.rsplit('.', 1)[1]}", namespace="tests", ip=ip,
            workdir=tmp_path, labels={}, **options,
        )  # fmt: skip
        started.append(pod)
        pod.start_processes()
        # start_processes waits for the sidecar only; a run sent before the app listens fails.
        wait_for(lambda: app_answers(pod), 30, f"the demo app of {pod.name}")
        return pod

    yield start
    for pod in started:
        for proc in pod.processes:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
        pod.stop_processes()


def run(
    receiver: Receiver, handler: str = "echo", payload: Any = None, **fields: Any
) -> DispatchRequest:
    values: dict[str, Any] = {
        "execution_key": f"exec-{uuid.uuid4().hex[:12]}",
        "task_uid": str(uuid.uuid4()),
        "task": "tests/nightly",
        "epoch": 7,
        "handler": handler,
        "payload": payload,
        "scheduled_at": datetime.now(UTC),
        "attempt": 1,
        "timeout_seconds": 60,
        "callback_url": receiver.url,
        "callback_token": CALLBACK_TOKEN,
    }
    values.update(fields)
    return DispatchRequest(**values)


def app_answers(pod: SidecarPod) -> bool:
    try:
        with urllib.request.urlopen(f"http://{pod.ip}:{APP_PORT}/healthz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def ledger(pod: SidecarPod) -> list[dict[str, Any]]:
    if not pod.ledger.exists():
        return []
    return [json.loads(line) for line in pod.ledger.read_text().splitlines() if line.strip()]


async def test_an_accepted_run_really_runs_and_reports_back(
    client: DispatchClient, receiver: Receiver, sidecars: Callable[..., SidecarPod]
) -> None:
    pod = await asyncio.to_thread(sidecars, "127.0.0.20")
    request = run(receiver, payload={"rows": [1, 2, 3]})

    result = await client.send(pod.sidecar_url, pod.token, request)

    assert (result.outcome, result.status, result.pod) == (Outcome.ACCEPTED, 202, pod.name)
    assert result.started and not result.try_another_pod and result.error is None
    callback = await receiver.callback(request.execution_key)
    assert (callback["status"], callback["result"]) == ("succeeded", {"rows": [1, 2, 3]})
    assert (callback["attempt"], callback["pod"]) == (1, pod.name)
    assert receiver.calls[0][0] == f"Bearer {CALLBACK_TOKEN}"
    (entry,) = ledger(pod)
    assert (entry["executionId"], entry["handler"]) == (request.execution_key, "echo")


async def test_a_duplicate_key_is_answered_from_the_pod_and_runs_once(
    client: DispatchClient, receiver: Receiver, sidecars: Callable[..., SidecarPod]
) -> None:
    pod = await asyncio.to_thread(sidecars, "127.0.0.20")
    request = run(receiver, "sleep", {"seconds": 0.5})

    first = await client.send(pod.sidecar_url, pod.token, request)
    again = await client.send(pod.sidecar_url, pod.token, request)

    assert first.outcome is Outcome.ACCEPTED
    assert (again.outcome, again.status, again.started) == (Outcome.DUPLICATE, 200, True)
    assert again.body is not None and again.body["state"] == "running"
    assert (await receiver.callback(request.execution_key))["status"] == "succeeded"
    # A new leader asking "do you have this run?" after it finished: still the same run.
    after = await client.send(pod.sidecar_url, pod.token, request)
    assert after.outcome is Outcome.DUPLICATE
    assert after.body is not None and after.body["state"] == "succeeded"
    assert [e["executionId"] for e in ledger(pod)] == [request.execution_key]


async def test_a_full_pod_answers_busy_and_a_cancel_frees_it(
    client: DispatchClient, receiver: Receiver, sidecars: Callable[..., SidecarPod]
) -> None:
    pod = await asyncio.to_thread(sidecars, "127.0.0.21", max_concurrency=1)
    slow = run(receiver, "sleep", {"seconds": 60})
    assert (await client.send(pod.sidecar_url, pod.token, slow)).outcome is Outcome.ACCEPTED

    busy = await client.send(pod.sidecar_url, pod.token, run(receiver))

    assert (busy.outcome, busy.status, busy.try_another_pod) == (Outcome.BUSY, 429, True)
    assert busy.body is not None and (busy.body["inFlight"], busy.body["capacity"]) == (1, 1)
    health = await client.probe(pod.sidecar_url, "/healthz", 1)
    assert (health.ok, health.in_flight, health.capacity) == (True, 1, 1)

    assert await client.cancel(pod.sidecar_url, pod.token, slow.execution_key) is True
    callback = await receiver.callback(slow.execution_key)
    assert callback["status"] == "cancelled"
    assert await client.cancel(pod.sidecar_url, pod.token, "never-dispatched") is False
    freed = await client.send(pod.sidecar_url, pod.token, run(receiver))
    assert freed.outcome is Outcome.ACCEPTED


async def test_a_draining_pod_refuses_new_runs_but_knows_its_own(
    client: DispatchClient, receiver: Receiver, sidecars: Callable[..., SidecarPod]
) -> None:
    pod = await asyncio.to_thread(sidecars, "127.0.0.22")
    slow = run(receiver, "sleep", {"seconds": 60})
    assert (await client.send(pod.sidecar_url, pod.token, slow)).outcome is Outcome.ACCEPTED

    pod.processes[0].send_signal(signal.SIGTERM)  # the sidecar only, as the kubelet does

    async def draining() -> bool:
        return (await client.probe(pod.sidecar_url, "/healthz", 1)).draining

    await async_wait_for(draining, 10, "the sidecar to drain")
    probe = await client.probe(pod.sidecar_url, "/healthz", 1)
    assert (probe.ok, probe.draining, probe.in_flight) == (False, True, 1)
    refused = await client.send(pod.sidecar_url, pod.token, run(receiver))
    assert (refused.outcome, refused.status, refused.try_another_pod) == (
        Outcome.DRAINING,
        503,
        True,
    )
    assert (await client.send(pod.sidecar_url, pod.token, slow)).outcome is Outcome.DUPLICATE


async def test_nothing_listening_is_unreachable_and_certainly_not_started(
    client: DispatchClient, receiver: Receiver
) -> None:
    url = f"http://{NOBODY_LISTENS}:9090"

    result = await client.send(url, None, run(receiver))

    assert (result.outcome, result.status, result.body) == (Outcome.UNREACHABLE, None, None)
    assert result.try_another_pod and not result.may_have_started
    assert result.error is not None and "connect" in result.error
    probe = await client.probe(url, "/healthz", 1)
    assert not probe.ok and probe.error is not None and "connect" in probe.error
    assert await client.cancel(url, None, "anything") is False


async def test_a_pod_that_stops_answering_may_have_started_the_run(
    client: DispatchClient, receiver: Receiver, sidecars: Callable[..., SidecarPod]
) -> None:
    pod = await asyncio.to_thread(sidecars, "127.0.0.23")
    os.kill(pod.processes[0].pid, signal.SIGSTOP)

    result = await client.send(pod.sidecar_url, pod.token, run(receiver))

    assert (result.outcome, result.status) == (Outcome.UNREACHABLE, None)
    assert result.may_have_started and result.try_another_pod
    assert result.error == "no answer within 3 s"
    probe = await client.probe(pod.sidecar_url, "/healthz", 1)
    assert (probe.ok, probe.error) == (False, "no answer within 1 s")


async def test_a_wrong_token_is_rejected_and_another_pod_may_be_tried(
    client: DispatchClient, receiver: Receiver, sidecars: Callable[..., SidecarPod]
) -> None:
    pod = await asyncio.to_thread(sidecars, "127.0.0.24", token="the-right-token")

    for token in ("a-wrong-token", None):
        result = await client.send(pod.sidecar_url, token, run(receiver))
        assert (result.outcome, result.status) == (Outcome.REJECTED, 401)
        assert result.try_another_pod and not result.started
        assert result.error is not None and "token" in result.error
    assert await client.cancel(pod.sidecar_url, "a-wrong-token", "anything") is False

    request = run(receiver)
    accepted = await client.send(pod.sidecar_url, "the-right-token", request)
    assert accepted.outcome is Outcome.ACCEPTED
    assert (await receiver.callback(request.execution_key))["status"] == "succeeded"
    assert [e["executionId"] for e in ledger(pod)] == [request.execution_key]


async def test_a_malformed_request_is_rejected_by_every_pod_alike(
    client: DispatchClient, receiver: Receiver, sidecars: Callable[..., SidecarPod]
) -> None:
    pod = await asyncio.to_thread(sidecars, "127.0.0.25")

    for fields, named in (({"task": "no-namespace"}, "task"), ({"attempt": 0}, "attempt")):
        result = await client.send(pod.sidecar_url, pod.token, run(receiver, **fields))
        assert (result.outcome, result.status) == (Outcome.REJECTED, 400)
        assert not result.try_another_pod, "every pod would refuse the same body"
        assert result.body is not None and result.body["field"] == named
        assert result.error is not None and named in result.error
    assert ledger(pod) == []


# -- batches (protocol version 2) -------------------------------------------------------------


async def test_a_batch_gets_each_run_the_result_send_would_give(
    client: DispatchClient, receiver: Receiver, sidecars: Callable[..., SidecarPod]
) -> None:
    pod = await asyncio.to_thread(sidecars, "127.0.0.40", max_concurrency=2)
    running = run(receiver, "sleep", {"seconds": 60})
    assert (await client.send(pod.sidecar_url, pod.token, running)).outcome is Outcome.ACCEPTED
    new = run(receiver, payload={"n": 1}, callback_batch_url=receiver.batch_url,
              callback_token="token-of-new")  # fmt: skip
    malformed = run(receiver, task="no-namespace")
    extra = run(receiver)

    results = await client.send_batch(pod.sidecar_url, pod.token, [running, new, malformed, extra])

    known, accepted, refused, busy = results
    assert (known.outcome, known.status, known.started) == (Outcome.DUPLICATE, 200, True)
    assert known.body is not None and known.body["state"] == "running"
    assert (accepted.outcome, accepted.status, accepted.pod) == (Outcome.ACCEPTED, 202, pod.name)
    assert accepted.started and accepted.error is None
    assert (refused.outcome, refused.status, refused.try_another_pod) == (
        Outcome.REJECTED,
        400,
        False,
    )
    assert refused.body is not None and refused.body["field"] == "task"
    assert refused.error is not None and "task" in refused.error
    assert (busy.outcome, busy.status, busy.try_another_pod) == (Outcome.BUSY, 429, True)
    assert busy.error == "HTTP 429: busy"
    # The run dispatched with a batch URL reports through it, with its own token.
    callback = await receiver.callback(new.execution_key)
    assert (callback["status"], callback["result"]) == ("succeeded", {"n": 1})
    assert receiver.batched == [new.execution_key]
    assert ("Bearer token-of-new", callback) in receiver.calls
    ran = [e["executionId"] for e in ledger(pod)]
    assert sorted(ran) == sorted([running.execution_key, new.execution_key])
    assert await client.send_batch(pod.sidecar_url, pod.token, []) == []


async def test_a_batch_to_a_wrong_token_or_nobody_fails_every_run_alike(
    client: DispatchClient, receiver: Receiver, sidecars: Callable[..., SidecarPod]
) -> None:
    pod = await asyncio.to_thread(sidecars, "127.0.0.41", token="the-right-token")
    requests = [run(receiver), run(receiver)]

    rejected = await client.send_batch(pod.sidecar_url, "a-wrong-token", requests)
    unreachable = await client.send_batch(f"http://{NOBODY_LISTENS}:9090", None, requests)

    assert [(r.outcome, r.status, r.try_another_pod) for r in rejected] == [
        (Outcome.REJECTED, 401, True)
    ] * 2
    assert [(r.outcome, r.may_have_started) for r in unreachable] == [
        (Outcome.UNREACHABLE, False)
    ] * 2
    assert ledger(pod) == []


@pytest.fixture
async def older_sidecar() -> AsyncIterator[tuple[list[str], Callable[[str], str]]]:
    """A sidecar of protocol version 1, as far as the client can tell: a real sidecar behind a
    pass-through that serves only ``POST /v1/executions`` (anything else is aiohttp's 404).
    Yields the paths it was asked for and ``front(sidecar_url) -> url to dispatch to``."""
    asked: list[str] = []
    behind: list[str] = []
    port = free_port()

    async def forward(request: web.Request) -> web.Response:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                behind[0] + request.path, data=await request.read(), headers=request.headers
            ) as resp,
        ):
            return web.Response(
                body=await resp.read(), status=resp.status, content_type="application/json"
            )

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        asked.append(request.path)
        response: web.StreamResponse = await handler(request)
        return response

    app = web.Application(middlewares=[record])
    app.router.add_post("/v1/executions", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()

    def front(sidecar_url: str) -> str:
        behind.append(sidecar_url)
        return f"http://127.0.0.1:{port}"

    yield asked, front
    await runner.cleanup()


async def test_an_older_sidecar_is_sent_the_runs_one_by_one(
    client: DispatchClient,
    receiver: Receiver,
    sidecars: Callable[..., SidecarPod],
    older_sidecar: tuple[list[str], Callable[[str], str]],
) -> None:
    asked, front = older_sidecar
    pod = await asyncio.to_thread(sidecars, "127.0.0.42", max_concurrency=1)
    first, second = run(receiver, "sleep", {"seconds": 60}), run(receiver)

    results = await client.send_batch(front(pod.sidecar_url), pod.token, [first, second, first])

    assert [(r.outcome, r.status) for r in results] == [
        (Outcome.ACCEPTED, 202),
        (Outcome.BUSY, 429),
        (Outcome.DUPLICATE, 200),
    ]
    assert asked == ["/v1/executions:batch"] + ["/v1/executions"] * 3
    # The app records the run when the sidecar hands it over, a moment after the 202.
    ran = await asyncio.to_thread(
        wait_for, lambda: [e["executionId"] for e in ledger(pod)], 10, "the run in the ledger"
    )
    assert ran == [first.execution_key]

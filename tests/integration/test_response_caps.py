"""Every answer the leader reads from a pod is read up to its cap and no further.

A real aiohttp server on 127.0.0.1 plays a hostile pod: whatever it is asked, it answers an
endless body (or announces a huge one), paced so that a client reading it all would buffer
hundreds of MiB before its deadline. The dispatch client must stop at the cap (the memory it
allocated during the call stays under the cap, and the pod sees its connection closed long
before the client's deadline) and report the answer as that pod's error.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from aiohttp import web

from cadenza.devenv.controlplane import free_port
from cadenza.dispatch import client as dispatch
from cadenza.dispatch.client import DispatchClient, DispatchRequest, Outcome

MiB = 1024 * 1024
CHUNK = b"x" * (256 * 1024)
PACE = 0.002
"""Seconds between two chunks: at most 128 MiB/s, so the old unbounded read of the client's
3 s would buffer about 380 MiB, and a capped read of 32 MiB ends in well under a second."""
TOTAL_TIMEOUT = 3.0
SLACK = 4 * MiB
"""Memory a capped read may take beyond its cap: aiohttp's own buffers, a chunk, bookkeeping."""


@dataclass
class Plan:
    status: int
    body: str = "endless"
    """``endless``: chunks until the client hangs up; ``announced``: a 10 GiB Content-Length,
    then the same chunks; ``small``: ``text`` and done."""
    text: bytes = b""


@dataclass
class HostilePod:
    url: str
    plans: dict[str, Plan] = field(default_factory=dict)
    """What each route answers, by ``METHOD path-kind`` (``POST run``, ``POST batch``,
    ``GET run``, ``DELETE run``, ``GET health``)."""
    asked: list[str] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    """Body bytes written, one entry per answer that ended because the client hung up."""

    async def hung_up(self, answers: int = 1, within: float = 10.0) -> list[int]:
        """The bytes written to each of the first ``answers`` answers once their clients hung
        up; fails at the deadline (a client still reading)."""
        deadline = time.monotonic() + within
        while len(self.sent) < answers:
            assert time.monotonic() < deadline, f"the client still reads: {self.asked}"
            await asyncio.sleep(0.01)
        return self.sent[:answers]


@pytest.fixture
async def pod() -> AsyncIterator[HostilePod]:
    port = free_port()
    box = HostilePod(url=f"http://127.0.0.1:{port}")

    async def answer(request: web.Request) -> web.StreamResponse:
        kind = "health" if request.path == "/healthz" else "run"
        kind = "batch" if request.path.endswith(":batch") else kind
        key = f"{request.method} {kind}"
        box.asked.append(key)
        plan = box.plans[key]
        if plan.body == "small":
            return web.Response(status=plan.status, body=plan.text, content_type="application/json")
        resp = web.StreamResponse(status=plan.status)
        resp.content_type = "application/json"
        if plan.body == "announced":
            resp.content_length = 10 * 1024 * MiB
        await resp.prepare(request)
        written = 0
        try:
            while True:
                await resp.write(CHUNK)
                written += len(CHUNK)
                await asyncio.sleep(PACE)
        except ConnectionError:
            box.sent.append(written)
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, handler_cancellation=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield box
    await runner.cleanup()


@pytest.fixture
async def client() -> AsyncIterator[DispatchClient]:
    dispatch_client = DispatchClient(connect_timeout=1.0, total_timeout=TOTAL_TIMEOUT)
    yield dispatch_client
    await dispatch_client.close()


@contextlib.contextmanager
def allocations() -> Iterator[list[int]]:
    """The peak of Python memory allocated inside the block (the test's pod included), in the
    one-item list yielded, filled when the block ends."""
    peak: list[int] = []
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def run() -> DispatchRequest:
    return DispatchRequest(
        execution_key=f"exec-{uuid.uuid4().hex[:12]}", task_uid=str(uuid.uuid4()),
        task="tests/nightly", epoch=1, handler="echo", payload=None,
        scheduled_at=datetime.now(UTC), attempt=1, timeout_seconds=60,
        callback_url="http://127.0.0.1:1/api/v1/callbacks/1", callback_token="t",
    )  # fmt: skip


def too_large(limit: int) -> str:
    return f"larger than {limit} bytes"


@pytest.mark.parametrize(
    ("status", "stays_with_the_pod"),
    [(429, False), (400, False), (202, True), (500, True)],
)
async def test_an_endless_dispatch_answer_is_cut_at_its_cap_and_is_the_pods_error(
    pod: HostilePod, client: DispatchClient, status: int, stays_with_the_pod: bool
) -> None:
    pod.plans["POST run"] = Plan(status)
    started = time.monotonic()

    with allocations() as peak:
        result = await client.send(pod.url, None, run())

    assert time.monotonic() - started < TOTAL_TIMEOUT, "read to the deadline, not to the cap"
    assert (result.outcome, result.status, result.body) == (Outcome.UNREACHABLE, status, None)
    assert result.error is not None and too_large(dispatch.RUN_ANSWER_MAX_BYTES) in result.error
    # 2xx or 5xx: the pod may have the run, so it must not go to a second pod; otherwise it
    # goes to the next pod at once (the rules' UNREACHABLE), never ending the attempt.
    assert result.may_have_started is stays_with_the_pod
    assert result.try_another_pod and not result.started
    assert peak[0] < dispatch.RUN_ANSWER_MAX_BYTES + SLACK
    (sent,) = await pod.hung_up()
    assert sent < dispatch.RUN_ANSWER_MAX_BYTES + 32 * MiB  # the cap plus socket buffers


async def test_a_batch_answer_is_cut_at_its_cap_for_every_run_in_it(
    pod: HostilePod, client: DispatchClient
) -> None:
    pod.plans["POST batch"] = Plan(200)
    requests = [run() for _ in range(3)]

    with allocations() as peak:
        results = await client.send_batch(pod.url, None, requests)

    assert peak[0] < dispatch.BATCH_ANSWER_MAX_BYTES + SLACK
    assert [(r.outcome, r.status, r.may_have_started) for r in results] == [
        (Outcome.UNREACHABLE, 200, True)
    ] * 3
    assert all(too_large(dispatch.BATCH_ANSWER_MAX_BYTES) in (r.error or "") for r in results)
    (sent,) = await pod.hung_up()
    assert sent < dispatch.BATCH_ANSWER_MAX_BYTES + 32 * MiB


async def test_a_batch_refused_by_status_still_falls_back_whatever_its_body(
    pod: HostilePod, client: DispatchClient
) -> None:
    # An older sidecar behind something that answers 404 with an endless page: the status alone
    # says "no batches here", and every single dispatch is cut at its own cap.
    pod.plans["POST batch"] = Plan(404, body="announced")
    pod.plans["POST run"] = Plan(503)

    results = await client.send_batch(pod.url, None, [run(), run()])

    assert pod.asked == ["POST batch", "POST run", "POST run"]
    assert [(r.outcome, r.status, r.may_have_started) for r in results] == [
        (Outcome.UNREACHABLE, 503, False)
    ] * 2
    assert all(too_large(dispatch.RUN_ANSWER_MAX_BYTES) in (r.error or "") for r in results)
    assert len(await pod.hung_up(3)) == 3


@pytest.mark.parametrize("body", ["endless", "announced"])
async def test_an_oversized_health_answer_fails_the_probe_saying_why(
    pod: HostilePod, client: DispatchClient, body: str
) -> None:
    pod.plans["GET health"] = Plan(200, body=body)

    with allocations() as peak:
        probe = await client.probe(pod.url, "/healthz", 2.0)

    assert (probe.ok, probe.draining, probe.in_flight) == (False, False, None)
    assert probe.error == (
        f"HTTP 200: the answer is larger than {dispatch.PROBE_ANSWER_MAX_BYTES} bytes;"
        " not read further"
    )
    assert peak[0] < dispatch.PROBE_ANSWER_MAX_BYTES + SLACK
    await pod.hung_up()
    # An answer of up to the cap is read whole: the pod is healthy again at its next probe.
    padding = "x" * (dispatch.PROBE_ANSWER_MAX_BYTES - 100)
    text = f'{{"status": "ok", "inFlight": 1, "capacity": 4, "pad": "{padding}"}}'.encode()
    assert len(text) <= dispatch.PROBE_ANSWER_MAX_BYTES
    pod.plans["GET health"] = Plan(200, body="small", text=text)
    probe = await client.probe(pod.url, "/healthz", 2.0)
    assert (probe.ok, probe.in_flight, probe.capacity, probe.error) == (True, 1, 4, None)


async def test_oversized_view_and_cancel_answers_are_the_pods_error(
    pod: HostilePod, client: DispatchClient
) -> None:
    pod.plans["GET run"] = Plan(200)
    pod.plans["DELETE run"] = Plan(200)

    with allocations() as peak:
        view = await client.view(pod.url, None, "exec-1")
        cancelled = await client.cancel(pod.url, None, "exec-1")

    assert view is None, "a view too large to read is a pod that could not be asked"
    assert cancelled is False, "a cancel whose answer is too large to read is not confirmed"
    assert peak[0] < dispatch.RUN_ANSWER_MAX_BYTES + SLACK
    assert len(await pod.hung_up(2)) == 2


async def test_answers_nested_too_deep_to_decode_are_read_as_no_json(
    pod: HostilePod, client: DispatchClient
) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    pod.plans["POST run"] = Plan(202, body="small", text=deep)
    pod.plans["GET health"] = Plan(200, body="small", text=deep)
    result = await client.send(pod.url, None, run())
    assert result.status == 202 and result.body is None
    probe = await client.probe(pod.url, "/healthz", 2.0)
    assert probe.in_flight is None

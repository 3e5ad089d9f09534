"""Headers no client library would send (bytes that are not UTF-8, non-ASCII tokens, a header
without a scheme) are refused 401 by the sidecar, never answered 500, and run nothing."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest


def raw_request(host: str, port: int, method: str, path: str, header: bytes, body: bytes) -> int:
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(
            b"%s %s HTTP/1.1\r\nHost: test\r\n%sContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (method.encode(), path.encode(), header, len(body), body)
        )
        return int(conn.makefile("rb").readline().split()[1])


@pytest.mark.parametrize(
    "header",
    [
        b"Authorization: Bearer \xff\xfe\x80token\r\n",
        b"Authorization: Bearer \xed\xa0\x80\r\n",  # a lone surrogate, as UTF-8 would spell it
        b"Authorization: Bearer \xc3\xa9t\xc3\xa9\r\n",
        b"Authorization: \xff\r\n",
    ],
    ids=["invalid-utf8", "surrogate", "non-ascii", "no-scheme"],
)
async def test_odd_authorization_headers_are_401(
    shared_sidecar, shared_demo_app, receiver, header: bytes
) -> None:
    body = receiver.dispatch_body("echo")
    where = (shared_sidecar.host, shared_sidecar.port)
    data = json.dumps(body).encode()
    post = await asyncio.to_thread(raw_request, *where, "POST", "/v1/executions", header, data)
    run = f"/v1/executions/{body['executionId']}"
    get = await asyncio.to_thread(raw_request, *where, "GET", run, header, b"")
    assert (post, get) == (401, 401)
    assert body["executionId"] not in [e["executionId"] for e in shared_demo_app.ledger()]


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 200_000 + b"]" * 200_000,
        b'{"executionId": NaN}',
        b"\xff\xfe not json",
        b'{"executionId": "' + b"x" * 100 + b'", "payload": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
    ids=["deep", "nan", "not-utf8", "deep-payload"],
)
async def test_bodies_of_any_shape_or_depth_are_400(shared_sidecar, body: bytes) -> None:
    where = (shared_sidecar.host, shared_sidecar.port)
    auth = b"Authorization: Bearer " + shared_sidecar.token.encode() + b"\r\n"
    for path in ("/v1/executions", "/v1/executions:batch"):
        status = await asyncio.to_thread(raw_request, *where, "POST", path, auth, body)
        assert status == 400, (path, status)

"""A rotated token file reaches a running sidecar: the new token works at once, the old one until
its grace ends, and a botched rewrite locks nobody out."""

from __future__ import annotations

import time

from tests.sidecar.conftest import SidecarProcess, eventually, write_private

GRACE = 3.0
FAST_WATCH = ("--token-grace-seconds", str(GRACE), "--token-poll-seconds", "0.1")


async def accepted(sidecar: SidecarProcess, token: str) -> bool:
    """Whether ``/v1/*`` takes the token: an unknown run is 404 past the check, 401 before it."""
    status = (await sidecar.get("no-such-run", token=token)).status
    assert status in (401, 404), status
    return status == 404


async def test_a_rewritten_token_file_is_used_without_a_restart_and_the_old_token_for_the_grace(
    receiver, demo_app, start_sidecar
):
    sidecar = start_sidecar(handler_url=demo_app.handler_url, extra_args=FAST_WATCH)
    old, new = sidecar.token, "rotated-dispatch-token"
    assert old is not None and sidecar.token_file is not None
    pid = sidecar.pid
    assert not await accepted(sidecar, new)

    write_private(sidecar.token_file, new + "\n")
    await eventually(lambda: accepted(sidecar, new), within=10, what="the new token accepted")
    switched = time.monotonic()

    assert await accepted(sidecar, old), "the old token is accepted during the grace"
    body = receiver.dispatch_body("echo", {"n": 1})
    assert (await sidecar.post(body, token=new)).status == 202
    await receiver.wait_acknowledged(body["executionId"])
    await eventually(
        lambda: _refused(sidecar, old), within=GRACE + 10, what="the old token refused"
    )
    assert time.monotonic() - switched >= GRACE - 0.5, "refused before its grace ended"
    assert await accepted(sidecar, new)
    assert sidecar.pid == pid and sidecar.running(), "no restart"


async def _refused(sidecar: SidecarProcess, token: str) -> bool:
    return not await accepted(sidecar, token)


async def test_an_empty_or_unreadable_rewrite_keeps_the_current_token(start_sidecar, demo_app):
    sidecar = start_sidecar(handler_url=demo_app.handler_url, extra_args=FAST_WATCH)
    token, token_file = sidecar.token, sidecar.token_file
    assert token is not None and token_file is not None

    write_private(token_file, "\n")
    await eventually(lambda: "it is empty" in sidecar.log(), what="a warning of the empty file")
    assert await accepted(sidecar, token)

    token_file.unlink()
    await eventually(lambda: "cannot read it" in sidecar.log(), what="a warning of no file")
    assert await accepted(sidecar, token)
    assert not await accepted(sidecar, "")

    write_private(token_file, "the-next-token")
    await eventually(lambda: accepted(sidecar, "the-next-token"), what="the next token accepted")
    assert await accepted(sidecar, token), "the last good token keeps its grace"

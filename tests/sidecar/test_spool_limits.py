"""The spool is bounded: at ``--spool-max-files`` or ``--spool-max-bytes`` (results spooled plus
room reserved for runs in flight) a new dispatch is answered 429 busy naming the spool, singly and
per batch item, until delivered results drain it; an admitted run's result always finds its room
(trimmed to it, saying so, if it must be); and a full disk leaves no temporary file behind while
results still reach the operator from memory.

The full disk is real: a 64 KiB tmpfs mounted for the test (root only; skipped elsewhere), filled
up by the test.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PYTHON = sys.executable
# Writes 5000 control characters: JSON escapes each as \u0001, so the result grows sixfold.
CONTROL_CHARACTERS = "import sys; sys.stdout.write(chr(1) * 5000)"


async def drained(sidecar) -> bool:
    """No result left in the spool or pending delivery (so the room is given back too)."""
    return sidecar.spooled() == [] and (await sidecar.healthz()).body["pendingCallbacks"] == 0


def assert_spool_busy(reply, limit: str) -> None:
    assert reply.status == 429, reply.body
    assert reply.body["error"] == "busy"
    assert {"inFlight", "capacity"} <= reply.body.keys()
    assert "spool full" in reply.body["reason"]
    assert limit in reply.body["reason"]


async def test_at_the_file_cap_dispatches_are_busy_until_the_spool_drains(
    receiver, demo_app, start_sidecar, wait_until
):
    sidecar = start_sidecar(handler_url=demo_app.handler_url, extra_args=("--spool-max-files", "2"))
    receiver.answer = 503  # results stay in the spool until the operator comes back
    first = receiver.dispatch_body("sleep", {"seconds": 0.2})
    second = receiver.dispatch_body("echo", {"n": 2})
    third = receiver.dispatch_body("echo", {"n": 3})
    fourth = receiver.dispatch_body("echo", {"n": 4})
    assert (await sidecar.post(first)).status == 202
    assert (await sidecar.post(second)).status == 202

    # Whether or not they have finished, the two runs hold the spool's two places.
    assert_spool_busy(await sidecar.post(third), "--spool-max-files")
    await sidecar.wait_state(first["executionId"], "succeeded")
    await sidecar.wait_state(second["executionId"], "succeeded")
    assert len(sidecar.spooled()) == 2  # both results kept, none dropped
    assert_spool_busy(await sidecar.post(third), "--spool-max-files")

    batch = await sidecar.post_batch([third, fourth, second])
    assert batch.status == 200
    busy_third, busy_fourth, known = batch.body["results"]
    for item, body in ((busy_third, third), (busy_fourth, fourth)):
        assert (item["executionId"], item["result"], item["status"]) == (
            body["executionId"],
            "busy",
            429,
        )
        assert "--spool-max-files" in item["reason"]
    assert known["result"] == "known"
    assert (await sidecar.get(third["executionId"])).status == 404
    assert demo_app.ledger(third["executionId"]) == []

    receiver.answer = 200
    await receiver.wait_acknowledged(first["executionId"])
    await receiver.wait_acknowledged(second["executionId"])
    await wait_until(lambda: drained(sidecar), what="the spool to drain")
    assert (await sidecar.post(third)).status == 202
    assert (await receiver.wait_acknowledged(third["executionId"]))["result"] == {"n": 3}


async def test_at_the_byte_cap_runs_in_flight_hold_their_room(
    receiver, demo_app, start_sidecar, wait_until
):
    # Each run reserves about 2 x 1000 bytes of output room plus its record: two fit in 9000.
    sidecar = start_sidecar(
        handler_url=demo_app.handler_url,
        extra_args=("--max-output-bytes", "1000", "--spool-max-bytes", "9000"),
    )
    running = [receiver.dispatch_body("sleep", {"seconds": 30}) for _ in range(2)]
    waiting = receiver.dispatch_body("echo", {"late": True})
    for body in running:
        assert (await sidecar.post(body)).status == 202

    assert_spool_busy(await sidecar.post(waiting), "--spool-max-bytes")
    batch = await sidecar.post_batch([waiting])
    assert batch.body["results"][0]["result"] == "busy"
    assert "--spool-max-bytes" in batch.body["results"][0]["reason"]

    for body in running:
        assert (await sidecar.delete(body["executionId"])).status == 202
        assert (await receiver.wait_acknowledged(body["executionId"]))["status"] == "cancelled"
    await wait_until(lambda: drained(sidecar), what="the spool to drain")
    assert (await sidecar.post(waiting)).status == 202
    assert (await receiver.wait_acknowledged(waiting["executionId"]))["result"] == {"late": True}


async def test_a_result_larger_than_its_room_is_cut_to_fit_saying_so(receiver, start_sidecar):
    sidecar = start_sidecar(
        command=[PYTHON, "-c", CONTROL_CHARACTERS], extra_args=("--max-output-bytes", "1000")
    )
    body = receiver.dispatch_body("anything")

    assert (await sidecar.post(body)).status == 202

    callback = await receiver.wait_acknowledged(body["executionId"])
    assert callback["status"] == "succeeded"
    result = callback["result"]
    assert result.startswith(chr(1) * 100)
    assert result.endswith("bytes truncated to fit the spool ...]")
    # The room was about 2 x 1000 bytes of output; the escaped text alone would take 6000.
    assert len(json.dumps(result)) < 3500
    # Every copy of the result is the trimmed one: the run view agrees with the callback.
    assert (await sidecar.get(body["executionId"])).body["result"] == result


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, unmounted at the end (after the sidecars, which are set up later)."""
    point = tmp_path / "small-disk"
    point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield point
    finally:
        if subprocess.run(["umount", str(point)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(point)], check=True)


def fill(disk: Path) -> Path:
    """Writes a file on ``disk`` until the disk is full; returns it."""
    filler = disk / "filler"
    chunk = b"x" * 4096
    with filler.open("wb", buffering=0) as out:  # unbuffered: close has nothing left to write
        try:
            while True:
                out.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def leftovers(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp"))


async def test_a_full_disk_leaves_no_temp_file_and_results_still_arrive(
    small_disk, receiver, demo_app, start_sidecar, wait_until
):
    spool_dir = small_disk / "spool"
    sidecar = start_sidecar(handler_url=demo_app.handler_url, spool_dir=spool_dir)
    filler = fill(small_disk)
    bodies = [receiver.dispatch_body("echo", {"i": i, "pad": "p" * 3000}) for i in range(3)]

    for body in bodies:
        assert (await sidecar.post(body)).status == 202
        assert (await sidecar.wait_state(body["executionId"], "succeeded"))["result"] == body[
            "payload"
        ]
        # Delivered from memory, with the full result.
        assert (await receiver.wait_acknowledged(body["executionId"]))["result"] == body["payload"]

    assert leftovers(spool_dir) == []
    assert sidecar.spooled() == []
    assert (await sidecar.healthz()).status == 200
    assert "could not spool a result" in sidecar.log()

    # With room again, results are spooled again (and removed once delivered).
    with contextlib.suppress(FileNotFoundError):
        filler.unlink()
    receiver.answer = 503
    later = receiver.dispatch_body("echo", {"after": "room"})
    assert (await sidecar.post(later)).status == 202
    await sidecar.wait_state(later["executionId"], "succeeded")
    assert len(sidecar.spooled()) == 1
    receiver.answer = 200
    await receiver.wait_acknowledged(later["executionId"])
    await wait_until(lambda: drained(sidecar), what="the spool to drain")
    assert leftovers(spool_dir) == []


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CADENZA_")}
    return subprocess.run(
        [PYTHON, "-m", "cadenza_sidecar", *args, "--command", "true"],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        pytest.param(
            ["--spool-max-files", "0"],
            {},
            "--spool-max-files: '0' must be an integer >= 1",
            id="no-files",
        ),
        pytest.param(
            ["--spool-max-bytes", "lots"],
            {},
            "--spool-max-bytes: 'lots' must be an integer >= 1",
            id="not-a-number",
        ),
        pytest.param(
            [],
            {"CADENZA_SIDECAR_SPOOL_MAX_FILES": "-3"},
            "CADENZA_SIDECAR_SPOOL_MAX_FILES",
            id="bad-env-value",
        ),
        pytest.param(
            ["--spool-max-bytes", "4096"],
            {},
            "--spool-max-bytes 4096 (or CADENZA_SIDECAR_SPOOL_MAX_BYTES) cannot hold one result",
            id="too-small-for-one-result",
        ),
    ],
)
def test_bad_spool_limits_exit_2_naming_the_setting(args, env, message):
    result = run_cli(*args, env=env)

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr

"""At ``timeoutSeconds`` a run is stopped and reported ``timed_out``; no process outlives it."""

from __future__ import annotations

import time


async def test_command_is_killed_and_reported_timed_out(
    command_sidecar, receiver, tmp_path, wait_until, alive
):
    pid_file = tmp_path / "pid"
    child_pid_file = tmp_path / "child-pid"
    body = receiver.dispatch_body(
        "slow",
        {"sleep": 60, "pidFile": str(pid_file), "childPidFile": str(child_pid_file)},
        timeout=1.5,
    )
    assert (await command_sidecar.post(body)).status == 202
    await wait_until(pid_file.exists, what="the command to start")
    await wait_until(child_pid_file.exists, what="the command's child to start")
    pid, child_pid = int(pid_file.read_text()), int(child_pid_file.read_text())
    assert alive(pid)

    callback = await receiver.wait_acknowledged(body["executionId"])

    assert callback["status"] == "timed_out"
    assert "timed out after 1.5 seconds" in callback["error"]
    assert callback["exitCode"] is None
    assert not alive(pid)
    # The whole process group goes, not only the command itself.
    await wait_until(lambda: not alive(child_pid), within=5, what="the child to be killed")
    view = (await command_sidecar.get(body["executionId"])).body
    assert view["state"] == "timed_out"


async def test_command_ignoring_sigterm_is_killed_after_the_grace(
    command_sidecar, receiver, tmp_path, wait_until, alive
):
    pid_file = tmp_path / "pid"
    body = receiver.dispatch_body(
        "stubborn", {"sleep": 60, "ignoreSigterm": True, "pidFile": str(pid_file)}, timeout=1
    )
    assert (await command_sidecar.post(body)).status == 202
    await wait_until(pid_file.exists, what="the command to start")
    pid = int(pid_file.read_text())

    callback = await receiver.wait_acknowledged(body["executionId"])

    assert callback["status"] == "timed_out"
    assert not alive(pid)
    assert "ignored SIGTERM" in command_sidecar.log()


async def test_http_call_is_aborted_and_reported_timed_out(http_sidecar, demo_app, receiver):
    body = receiver.dispatch_body("sleep", {"seconds": 30}, timeout=0.5)
    started = time.monotonic()
    assert (await http_sidecar.post(body)).status == 202

    callback = await receiver.wait_acknowledged(body["executionId"])

    assert callback["status"] == "timed_out"
    assert callback["result"] is None
    assert time.monotonic() - started < 10
    health = (await http_sidecar.healthz()).body
    assert health["inFlight"] == 0
    assert len(demo_app.ledger(body["executionId"])) == 1


async def test_run_finishing_before_the_timeout_is_not_affected(http_sidecar, receiver):
    body = receiver.dispatch_body("sleep", {"seconds": 0.2}, timeout=5)
    assert (await http_sidecar.post(body)).status == 202

    callback = await receiver.wait_acknowledged(body["executionId"])

    assert callback["status"] == "succeeded"

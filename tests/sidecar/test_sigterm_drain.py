"""SIGTERM drains: refuse new work, let runs finish within the grace, report, then exit 0."""

from __future__ import annotations

import signal


async def test_drain_finishes_runs_in_flight_and_exits_0(receiver, demo_app, start_sidecar):
    sidecar = start_sidecar(handler_url=demo_app.handler_url, extra_args=("--grace-seconds", "20"))
    running = receiver.dispatch_body("sleep", {"seconds": 1.5})
    assert (await sidecar.post(running)).status == 202

    sidecar.send(signal.SIGTERM)

    health = await sidecar.healthz()
    assert health.status == 503
    assert health.body["status"] == "draining"
    assert health.body["draining"] is True
    refused = await sidecar.post(receiver.dispatch_body("echo"))
    assert refused.status == 503
    assert refused.body == {"error": "draining"}
    # A run it already has is still answered, including a re-dispatch of it.
    assert (await sidecar.get(running["executionId"])).body["state"] == "running"
    assert (await sidecar.post(running)).status == 200

    callback = await receiver.wait_acknowledged(running["executionId"])
    assert callback["status"] == "succeeded"
    assert callback["result"] == {"slept": 1.5}
    assert await sidecar.wait_exit() == 0
    assert sidecar.spooled() == []


async def test_runs_past_the_grace_are_cancelled_and_reported(
    receiver, script_command, start_sidecar, tmp_path, wait_until, alive
):
    sidecar = start_sidecar(command=script_command, extra_args=("--grace-seconds", "0.5"))
    pid_file = tmp_path / "pid"
    body = receiver.dispatch_body("forever", {"sleep": 60, "pidFile": str(pid_file)})
    assert (await sidecar.post(body)).status == 202
    await wait_until(pid_file.exists, what="the command to start")

    sidecar.send(signal.SIGTERM)

    callback = await receiver.wait_acknowledged(body["executionId"])
    assert callback["status"] == "cancelled"
    assert "shutting down" in callback["error"]
    assert await sidecar.wait_exit() == 0
    assert not alive(int(pid_file.read_text()))


async def test_undelivered_results_stay_spooled_for_the_next_start(
    receiver, demo_app, start_sidecar, wait_until
):
    sidecar = start_sidecar(handler_url=demo_app.handler_url)
    receiver.answer = 500
    body = receiver.dispatch_body("echo", {"later": True})
    assert (await sidecar.post(body)).status == 202
    await sidecar.wait_state(body["executionId"], "succeeded")

    sidecar.send(signal.SIGTERM)

    assert await sidecar.wait_exit() == 0
    assert len(sidecar.spooled()) == 1
    receiver.answer = 200
    await sidecar.restart()
    assert (await receiver.wait_acknowledged(body["executionId"]))["result"] == {"later": True}
    await wait_until(lambda: sidecar.spooled() == [], what="the spool to empty")


async def test_idle_sidecar_exits_0_at_once(http_sidecar):
    http_sidecar.send(signal.SIGTERM)

    assert await http_sidecar.wait_exit(within=5) == 0

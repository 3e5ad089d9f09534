"""``DELETE /v1/executions/{id}`` stops a run, which is then reported ``cancelled``."""

from __future__ import annotations


async def test_delete_kills_the_command_and_reports_cancelled(
    command_sidecar, receiver, tmp_path, wait_until, alive
):
    pid_file = tmp_path / "pid"
    body = receiver.dispatch_body("slow", {"sleep": 60, "pidFile": str(pid_file)})
    assert (await command_sidecar.post(body)).status == 202
    await wait_until(pid_file.exists, what="the command to start")
    pid = int(pid_file.read_text())

    reply = await command_sidecar.delete(body["executionId"])

    assert reply.status == 202
    assert reply.body["state"] == "cancelled"
    assert not alive(pid)
    callback = await receiver.wait_acknowledged(body["executionId"])
    assert callback["status"] == "cancelled"
    assert "cancel" in callback["error"]
    assert (await command_sidecar.healthz()).body["inFlight"] == 0


async def test_delete_aborts_the_http_call(http_sidecar, receiver, demo_app, wait_until):
    body = receiver.dispatch_body("sleep", {"seconds": 30})
    assert (await http_sidecar.post(body)).status == 202
    await wait_until(lambda: demo_app.ledger(body["executionId"]), what="the app to be called")

    reply = await http_sidecar.delete(body["executionId"])

    assert reply.status == 202
    assert reply.body["state"] == "cancelled"
    callback = await receiver.wait_acknowledged(body["executionId"])
    assert callback["status"] == "cancelled"
    assert callback["result"] is None


async def test_delete_of_a_finished_run_is_a_no_op(http_sidecar, receiver):
    body = receiver.dispatch_body("echo", {"done": True})
    assert (await http_sidecar.post(body)).status == 202
    await receiver.wait_acknowledged(body["executionId"])

    reply = await http_sidecar.delete(body["executionId"])

    assert reply.status == 200
    assert reply.body["state"] == "succeeded"
    assert reply.body["result"] == {"done": True}
    assert len(receiver.attempts(body["executionId"])) == 1


async def test_delete_twice_reports_once(http_sidecar, receiver):
    body = receiver.dispatch_body("sleep", {"seconds": 30})
    assert (await http_sidecar.post(body)).status == 202

    first = await http_sidecar.delete(body["executionId"])
    second = await http_sidecar.delete(body["executionId"])

    assert first.status == 202
    assert second.status == 200
    assert second.body["state"] == "cancelled"
    await receiver.wait_acknowledged(body["executionId"])
    assert len(receiver.attempts(body["executionId"])) == 1


async def test_delete_of_an_unknown_run_is_404(http_sidecar):
    reply = await http_sidecar.delete("does-not-exist")

    assert reply.status == 404
    assert reply.body["executionId"] == "does-not-exist"

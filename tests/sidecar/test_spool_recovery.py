"""Finished results survive kill -9 of the sidecar: the next start re-sends them from the spool."""

from __future__ import annotations

import json


async def test_kill_9_after_the_run_finished_loses_nothing(
    http_sidecar, demo_app, receiver, wait_until
):
    await receiver.stop()  # the operator is unreachable: the callback cannot be delivered
    body = receiver.dispatch_body("echo", {"precious": True})
    assert (await http_sidecar.post(body)).status == 202
    # A run reads as finished only once its result is durable.
    await http_sidecar.wait_state(body["executionId"], "succeeded")
    assert len(http_sidecar.spooled()) == 1

    http_sidecar.kill_group()
    await receiver.start()
    await http_sidecar.restart()

    callback = await receiver.wait_acknowledged(body["executionId"])
    assert callback["status"] == "succeeded"
    assert callback["result"] == {"precious": True}
    assert callback["pod"] == f"pod-{http_sidecar.host}"
    await wait_until(lambda: http_sidecar.spooled() == [], what="the spool to empty")
    # The restarted sidecar remembers the spooled id: a re-dispatch does not run it again.
    again = await http_sidecar.post(body)
    assert again.status == 200
    assert again.body["state"] == "succeeded"
    assert len(demo_app.ledger(body["executionId"])) == 1


async def test_every_spooled_result_is_resent(http_sidecar, receiver, wait_until):
    receiver.answer = 503
    bodies = [receiver.dispatch_body("echo", {"i": i}) for i in range(5)]
    for body in bodies:
        # One at a time: five at once would find the pod (capacity 4) busy on a slow machine.
        assert (await http_sidecar.post(body)).status == 202
        await http_sidecar.wait_state(body["executionId"], "succeeded")

    http_sidecar.kill_group()
    receiver.answer = 200
    await http_sidecar.restart()

    for i, body in enumerate(bodies):
        assert (await receiver.wait_acknowledged(body["executionId"]))["result"] == {"i": i}
    await wait_until(lambda: http_sidecar.spooled() == [], what="the spool to empty")


async def test_unreadable_spool_files_are_set_aside(http_sidecar, receiver, wait_until):
    await receiver.stop()
    body = receiver.dispatch_body("echo", {"ok": 1})
    assert (await http_sidecar.post(body)).status == 202
    await http_sidecar.wait_state(body["executionId"], "succeeded")
    http_sidecar.kill_group()
    (http_sidecar.spool_dir / "garbage.json").write_text("{truncated")
    (http_sidecar.spool_dir / "wrong-version.json").write_text(json.dumps({"version": 99}))
    (http_sidecar.spool_dir / "half-written.json.tmp").write_text("{")

    await receiver.start()
    await http_sidecar.restart()

    await receiver.wait_acknowledged(body["executionId"])
    await wait_until(lambda: http_sidecar.spooled() == [], what="the spool to empty")
    leftovers = sorted(p.name for p in http_sidecar.spool_dir.iterdir())
    assert leftovers == ["garbage.corrupt", "wrong-version.corrupt"]
    assert "unreadable spool file set aside" in http_sidecar.log()

"""``--callback-allow``: results go only to the operator. A dispatch naming another callback URL
is refused 400 naming the field (single and batch alike) and runs nothing; one naming an allowed
URL runs and reports there."""

from __future__ import annotations

import subprocess
import sys


async def test_callbacks_outside_the_allow_list_are_refused(
    receiver, demo_app, start_sidecar
) -> None:
    sidecar = start_sidecar(
        handler_url=demo_app.handler_url, extra_args=("--callback-allow", receiver.url)
    )
    elsewhere = receiver.dispatch_body("echo", callbackUrl="http://attacker.invalid/collect")
    refused = await sidecar.post(elsewhere)
    assert refused.status == 400 and refused.body["field"] == "callbackUrl"
    bad_batch = receiver.dispatch_body(
        "echo", batched=True, callbackBatchUrl="http://attacker.invalid/batch"
    )
    answer = await sidecar.post_batch([bad_batch])
    (item,) = answer.body["results"]
    assert (item["status"], item["field"]) == (400, "callbackBatchUrl"), item
    ran = [e["executionId"] for e in demo_app.ledger()]
    assert elsewhere["executionId"] not in ran and bad_batch["executionId"] not in ran

    allowed = receiver.dispatch_body("echo")
    assert (await sidecar.post(allowed)).status == 202
    await receiver.wait_acknowledged(allowed["executionId"])


async def test_without_an_allow_list_the_sidecar_warns(receiver, demo_app, start_sidecar) -> None:
    sidecar = start_sidecar(handler_url=demo_app.handler_url)
    assert (await sidecar.post(receiver.dispatch_body("echo"))).status == 202
    assert "no --callback-allow" in sidecar.log()


def test_a_bad_allow_list_is_refused_at_start(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cadenza_sidecar", "--insecure-no-auth", "--listen", "127.0.0.1",
         "--port", "0", "--spool-dir",
         str(tmp_path), "--callback-allow", "not a url", "--command", "true"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2 and "--callback-allow" in done.stderr

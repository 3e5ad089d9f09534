"""Command mode: payload on stdin and in the environment, exit code decides, output is capped."""

from __future__ import annotations

import json
import sys


async def test_payload_and_run_details_reach_the_command(command_sidecar, receiver):
    payload = {"greeting": "héllo", "items": [1, 2, 3]}
    body = receiver.dispatch_body("nightly-report", payload, attempt=3)
    assert (await command_sidecar.post(body)).status == 202

    callback = await receiver.wait_acknowledged(body["executionId"])

    assert callback["status"] == "succeeded"
    assert callback["exitCode"] == 0
    assert callback["error"] is None
    result = callback["result"]
    assert result["stdin"] == payload
    env = result["env"]
    assert json.loads(env["CADENZA_PAYLOAD"]) == payload
    assert env["CADENZA_HANDLER"] == "nightly-report"
    assert env["CADENZA_EXECUTION_ID"] == body["executionId"]
    assert env["CADENZA_ATTEMPT"] == "3"
    assert env["CADENZA_SCHEDULED_AT"] == body["scheduledAt"]


async def test_nonzero_exit_reports_failed_with_code_and_stderr(command_sidecar, receiver):
    body = receiver.dispatch_body("broken", {"exit": 3, "stderr": "disk full\n"})
    assert (await command_sidecar.post(body)).status == 202

    callback = await receiver.wait_acknowledged(body["executionId"])

    assert callback["status"] == "failed"
    assert callback["exitCode"] == 3
    assert callback["error"].startswith("exit code 3")
    assert "disk full" in callback["error"]


async def test_output_is_truncated(command_sidecar, receiver):
    body = receiver.dispatch_body("chatty", {"stdoutBytes": 100_000, "stderr": "e" * 50_000})
    assert (await command_sidecar.post(body)).status == 202

    callback = await receiver.wait_acknowledged(body["executionId"])

    assert callback["status"] == "succeeded"
    assert isinstance(callback["result"], str)
    assert callback["result"].startswith("o" * 4096)
    assert "truncated" in callback["result"]
    assert len(callback["result"]) < 4200


async def test_dispatch_token_does_not_leak_into_the_command(
    receiver, start_sidecar, script_command
):
    sidecar = start_sidecar(command=script_command, token="secret", token_via="env")
    body = receiver.dispatch_body("check", None)
    assert (await sidecar.post(body, token="secret")).status == 202

    callback = await receiver.wait_acknowledged(body["executionId"])

    assert callback["result"]["env"]["CADENZA_SIDECAR_TOKEN"] is None
    assert callback["result"]["stdin"] is None


async def test_payload_too_big_for_the_environment_comes_on_stdin_only(receiver, start_sidecar):
    report_sizes = (
        "import json, os, sys; data = json.load(sys.stdin); "
        "print(json.dumps({'chars': len(data['big']), 'inEnv': 'CADENZA_PAYLOAD' in os.environ}))"
    )
    sidecar = start_sidecar(command=[sys.executable, "-c", report_sizes])
    body = receiver.dispatch_body("bulk", {"big": "x" * 200_000})
    assert (await sidecar.post(body)).status == 202

    callback = await receiver.wait_acknowledged(body["executionId"])

    assert callback["status"] == "succeeded"
    assert callback["result"] == {"chars": 200_000, "inEnv": False}


async def test_missing_program_reports_failed(receiver, start_sidecar, tmp_path):
    sidecar = start_sidecar(command=[str(tmp_path / "no-such-program")])
    body = receiver.dispatch_body("anything")
    assert (await sidecar.post(body)).status == 202

    callback = await receiver.wait_acknowledged(body["executionId"])

    assert callback["status"] == "failed"
    assert "could not start" in callback["error"]


async def test_command_that_ignores_stdin_still_works(receiver, start_sidecar):
    sidecar = start_sidecar(command=["/bin/sh", "-c", 'printf "%s" "$CADENZA_HANDLER"; exit 7'])
    body = receiver.dispatch_body("from-env", {"big": "x" * 100_000})
    assert (await sidecar.post(body)).status == 202

    callback = await receiver.wait_acknowledged(body["executionId"])

    assert callback["status"] == "failed"
    assert callback["exitCode"] == 7
    assert callback["result"] == "from-env"

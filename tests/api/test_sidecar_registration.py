"""The sidecar as the original system's sample executor: a real sidecar process on a loopback
address registers itself with the REST API (a ServiceAccount token of its own), heartbeats,
stores its dispatch token, serves ``/health``, takes the Task's runs, and marks itself offline
when stopped."""

from __future__ import annotations

import base64
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cadenza.devenv.controlplane import spawn, terminate
from cadenza.devenv.pods import APP_PORT, SIDECAR_PORT
from tests.api.conftest import Api, Callers
from tests.api.test_executors_api import eventually
from tests.support.scenario import _free_address

pytestmark = [pytest.mark.controlplane, pytest.mark.mariadb]


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_the_sidecar_registers_heartbeats_runs_and_goes_offline(
    api: Api, callers: Callers, tmp_path: Path
) -> None:
    token = callers.token(
        "sample-executor", ("get", "create", "update"), executor_verbs=("get", "create", "update")
    )
    (tmp_path / "api-token").write_text(token)
    ip = _free_address()
    spool = tmp_path / "spool"
    app = spawn(
        [sys.executable, "-m", "cadenza_sidecar.demo_app", "--listen", ip, "--port",
         str(APP_PORT), "--ledger", str(tmp_path / "ledger.jsonl")],
        tmp_path / "app.log",
    )  # fmt: skip
    sidecar = spawn(
        [sys.executable, "-m", "cadenza_sidecar", "--listen", ip, "--port", str(SIDECAR_PORT),
         "--pod-name", "self-001", "--spool-dir", str(spool), "--grace-seconds", "2",
         "--handler-url", f"http://{ip}:{APP_PORT}/run",
         "--scheduler-url", api.url, "--executor-name", "self_executor",
         "--instance-id", "self-001", "--task", "self_task=*/2 * * * * *",
         "--api-token-file", str(tmp_path / "api-token"), "--heartbeat-seconds", "1"],
        tmp_path / "sidecar.log",
    )  # fmt: skip
    try:
        found = eventually(
            lambda: (
                (a := api.call("GET", "/api/v1/executors/self_executor")).status == 200 and a.body
            ),
            "the sidecar to register",
        )
        endpoint = found["endpoints"][0]
        assert endpoint["instanceId"] == "self-001"
        assert endpoint["baseUrl"] == f"http://{ip}:{SIDECAR_PORT}"
        assert endpoint["healthCheckUrl"] == f"http://{ip}:{SIDECAR_PORT}/health"
        assert found["heartbeatSeconds"] == 1
        assert status_of(f"http://{ip}:{SIDECAR_PORT}/health") == 200
        assert status_of(f"http://{ip}:{SIDECAR_PORT}/v1/executions/x") == 401

        secret = api.kubectl(
            "get", "secret", "self-executor-dispatch-token", "-n", api.namespace,
            "-o", "jsonpath={.data.token}",
        )  # fmt: skip
        stored = eventually(
            lambda: (spool / "dispatch-token").exists() and (spool / "dispatch-token").read_text(),
            "the dispatch token to be stored",
        )
        assert stored == base64.b64decode(secret).decode()

        def beat() -> object:
            rows = api.sql("SELECT beat_at FROM executor_heartbeats WHERE instance_id = 'self-001'")
            return rows[0]["beat_at"] if rows else None

        first = eventually(beat, "a heartbeat row")
        eventually(lambda: beat() != first, "a later heartbeat")

        # The demo app knows echo, sleep, fail and flaky; the created Task names none.
        patched = api.call("PATCH", "/api/v1/tasks/self_task", {"handler": "echo"})
        assert patched.status == 200, patched.body

        def succeeded() -> bool:
            page = api.call("GET", "/api/v1/tasks/self_task/executions?status=succeeded").body
            return any(r["pod"] == "self-001" for r in page["items"])

        eventually(succeeded, "a run of self_task to succeed on the registered sidecar")
        eventually(lambda: endpoint_health(api) is True, "the endpoint to be healthy")
    finally:
        terminate(sidecar, grace=15)
        terminate(app)
    state = api.call("GET", "/api/v1/executors/self_executor").body["endpoints"][0]["state"]
    assert state == "Offline"
    api.call("DELETE", "/api/v1/executors/self-001")


def endpoint_health(api: Api) -> bool | None:
    body = api.call("GET", "/api/v1/executors/self_executor").body
    return body["endpoints"][0]["healthy"]  # type: ignore[no-any-return]

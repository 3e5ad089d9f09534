"""The command line: one handler mode, flags beat CADENZA_SIDECAR_* variables, clear errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from cadenza_sidecar import settings

CONSOLE_SCRIPT = Path(sys.executable).parent / "cadenza-sidecar"
TOKEN = {"CADENZA_SIDECAR_TOKEN": "t0ken"}
"""A dispatch token in the environment: every sidecar needs one (or --insecure-no-auth)."""


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CADENZA_")} | TOKEN
    return subprocess.run(
        [sys.executable, "-m", "cadenza_sidecar", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        pytest.param([], {}, "exactly one handler mode", id="no-mode"),
        pytest.param(
            ["--handler-url", "http://127.0.0.1:8080/run", "--command", "true"],
            {},
            "exactly one handler mode",
            id="both-modes",
        ),
        pytest.param(
            ["--handler-url", "http://127.0.0.1/run"],
            {"CADENZA_SIDECAR_COMMAND": "true"},
            "exactly one handler mode",
            id="both-modes-via-env",
        ),
        pytest.param(["--command"], {}, "--command needs the program", id="empty-command"),
        pytest.param(["--handler-url", "localhost:8080"], {}, "--handler-url", id="relative-url"),
        pytest.param(["--port", "70000", "--command", "true"], {}, "--port", id="port-range"),
        pytest.param(
            ["--command", "true"],
            {"CADENZA_SIDECAR_MAX_CONCURRENCY": "zero"},
            "CADENZA_SIDECAR_MAX_CONCURRENCY",
            id="bad-env-value",
        ),
        pytest.param(
            ["--token-file", "/nonexistent/token", "--command", "true"],
            {},
            "--token-file",
            id="missing-token-file",
        ),
        pytest.param(
            ["--scheduler-url", "http://s:8080", "--command", "true"],
            {},
            "--executor-name",
            id="registration-without-executor",
        ),
        pytest.param(
            ["--scheduler-url", "http://s:8080", "--executor-name", "e", "--command", "true"],
            {},
            "--advertise-url",
            id="registration-listening-everywhere",
        ),
        pytest.param(
            ["--scheduler-url", "s:8080", "--command", "true"],
            {},
            "--scheduler-url",
            id="registration-relative-url",
        ),
    ],
)
def test_bad_configuration_exits_2_with_a_message(args, env, message):
    result = run_cli(*args, env=env)

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def run_without_token(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CADENZA_")}
    return subprocess.run(
        [sys.executable, "-m", "cadenza_sidecar", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=10,  # a sidecar that starts anyway fails the test here
    )


@pytest.mark.parametrize(
    "env",
    [{}, {"CADENZA_SIDECAR_TOKEN": ""}, {"CADENZA_SIDECAR_INSECURE_NO_AUTH": "false"}],
    ids=["nothing", "empty-variable", "flag-off"],
)
def test_without_a_dispatch_token_the_sidecar_refuses_to_start(tmp_path, env):
    result = run_without_token(
        "--listen", "127.0.0.1", "--port", "0", "--spool-dir", str(tmp_path),
        "--handler-url", "http://127.0.0.1:1/run", env=env,
    )  # fmt: skip

    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if "dispatch token" in line]
    for named in ("--token-file", "CADENZA_SIDECAR_TOKEN_FILE", "CADENZA_SIDECAR_TOKEN",
                  "--insecure-no-auth"):  # fmt: skip
        assert named in line, line
    assert not (tmp_path / "dispatch-token").exists()


def test_the_insecure_flag_takes_true_or_false_only():
    result = run_without_token(
        "--command", "true", env={"CADENZA_SIDECAR_INSECURE_NO_AUTH": "maybe"}
    )

    assert result.returncode == 2
    assert "CADENZA_SIDECAR_INSECURE_NO_AUTH='maybe' must be true or false" in result.stderr


def test_the_insecure_flag_from_the_environment_starts_and_warns(tmp_path, spawn, unused_address):
    host, port = unused_address.split(":")
    process = spawn(
        [sys.executable, "-m", "cadenza_sidecar", "--listen", host, "--port", port,
         "--spool-dir", str(tmp_path), "--handler-url", "http://127.0.0.1:1/run"],
        env={"CADENZA_SIDECAR_INSECURE_NO_AUTH": "true"},
    )  # fmt: skip

    process.wait_ready_blocking(f"http://{host}:{port}/healthz")

    warnings = [json.loads(line) for line in process.log().splitlines()]
    warned = [w for w in warnings if w["level"] == "warning" and "any caller" in w["message"]]
    assert warned, process.log()


def test_everything_after_command_is_its_argv():
    loaded = settings.load(["--port", "1234", "--command", "job", "--port", "-x"], environ=TOKEN)

    assert loaded.handler.command == ("job", "--port", "-x")
    assert loaded.server.port == 1234


def test_help_lists_every_flag():
    result = run_cli("--help")

    assert result.returncode == 0
    for flag in (
        "--listen", "--port", "--pod-name", "--token-file", "--handler-url", "--command",
        "--max-concurrency", "--spool-dir", "--grace-seconds", "--flush-seconds",
        "--max-batch-items", "--max-batch-bytes", "--callback-batch-max-items",
    ):  # fmt: skip
        assert flag in result.stdout


def test_registration_settings_from_flags_and_environment(tmp_path):
    token = tmp_path / "api-token"
    token.write_text("secret\n")
    flags = [
        "--listen", "10.0.0.5", "--port", "9191", "--pod-name", "p-1", "--command", "true",
    ]  # fmt: skip
    environ = {
        "CADENZA_SIDECAR_SCHEDULER_URL": "http://cadenza:8080/",
        "CADENZA_SIDECAR_EXECUTOR_NAME": "sample-executor",
        "CADENZA_SIDECAR_TASKS": "test_task=*/10 * * * * *;other_task",
        "CADENZA_SIDECAR_API_TOKEN_FILE": str(token),
    }
    loaded = settings.load([*flags[:-2], "--heartbeat-seconds", "5", *flags[-2:]], environ)
    reg = loaded.registration
    assert reg is not None
    assert reg.scheduler_url == "http://cadenza:8080"
    assert reg.instance_id == "p-1" and reg.advertise_url == "http://10.0.0.5:9191"
    assert reg.tasks == (("test_task", "*/10 * * * * *"), ("other_task", None))
    assert reg.api_token == "secret" and reg.heartbeat_seconds == 5
    assert settings.load(["--command", "true"], environ=TOKEN).registration is None


def test_batch_limits_have_documented_defaults_and_environment_twins():
    defaults = settings.load(["--command", "job"], environ=TOKEN)
    assert (defaults.server.max_batch_items, defaults.server.max_batch_bytes) == (1000, 8 << 20)
    assert defaults.callbacks.batch_max_items == 200

    environ = {
        "CADENZA_SIDECAR_MAX_BATCH_ITEMS": "10",
        "CADENZA_SIDECAR_MAX_BATCH_BYTES": "4096",
        "CADENZA_SIDECAR_CALLBACK_BATCH_MAX_ITEMS": "7",
        **TOKEN,
    }
    loaded = settings.load(["--max-batch-items", "20", "--command", "job"], environ=environ)
    assert (loaded.server.max_batch_items, loaded.server.max_batch_bytes) == (20, 4096)
    assert loaded.callbacks.batch_max_items == 7


def test_flags_beat_the_environment_which_beats_defaults(tmp_path):
    environ = {
        "CADENZA_SIDECAR_MAX_CONCURRENCY": "1",
        "CADENZA_SIDECAR_PORT": "9999",
        "CADENZA_SIDECAR_COMMAND": "/bin/job --fast 'two words'",
        "CADENZA_SIDECAR_TOKEN": "from-env",
        "CADENZA_SIDECAR_SPOOL_DIR": str(tmp_path),
        "POD_NAME": "pod-from-downward-api",
        "HOME": "/home/job",
    }

    loaded = settings.load(["--max-concurrency", "3"], environ=environ)

    assert loaded.runs.max_concurrency == 3
    assert loaded.server.port == 9999
    assert loaded.server.listen == "0.0.0.0"
    assert loaded.handler.command == ("/bin/job", "--fast", "two words")
    assert loaded.auth.token == "from-env"
    assert loaded.spool.directory == tmp_path
    assert loaded.pod_name == "pod-from-downward-api"
    assert loaded.drain.grace_seconds == 30
    assert dict(loaded.handler.child_env) == {
        "POD_NAME": "pod-from-downward-api",
        "HOME": "/home/job",
    }


def test_token_file_beats_the_token_variable(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("  from-file\n")

    loaded = settings.load(
        ["--token-file", str(token_file), "--handler-url", "http://127.0.0.1:1/run"],
        environ={"CADENZA_SIDECAR_TOKEN": "from-env"},
    )

    assert loaded.auth.token == "from-file"


def test_console_script_starts_from_the_environment(tmp_path, spawn, unused_address):
    host, port = unused_address.split(":")
    process = spawn(
        [str(CONSOLE_SCRIPT)],
        env={
            "CADENZA_SIDECAR_LISTEN": host,
            "CADENZA_SIDECAR_PORT": port,
            "CADENZA_SIDECAR_HANDLER_URL": "http://127.0.0.1:1/run",
            "CADENZA_SIDECAR_SPOOL_DIR": str(tmp_path / "spool"),
            "POD_NAME": "console-pod",
            **TOKEN,
        },
    )
    url = f"http://{host}:{port}/healthz"

    process.wait_ready_blocking(url)

    with urllib.request.urlopen(url, timeout=5) as response:
        assert json.load(response)["pod"] == "console-pod"
    assert (tmp_path / "spool").is_dir()
    process.send(signal.SIGTERM)
    assert process.popen.wait(timeout=10) == 0


def test_port_in_use_exits_1(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = run_cli(
            "--listen", "127.0.0.1", "--port", str(port), "--spool-dir", str(tmp_path),
            "--handler-url", "http://127.0.0.1:1/run",
        )  # fmt: skip

    assert result.returncode == 1
    assert "cannot listen" in result.stderr

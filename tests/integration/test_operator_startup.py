"""Bad configuration and unreachable dependencies: one clear error and a non-zero exit, or a
logged, retried wait — never a traceback loop."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cadenza.devenv import mariadb
from cadenza.devenv.controlplane import ControlPlane, free_port
from tests.support import db, wait_for


def _run(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cadenza", "operator"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def base_env(controlplane: ControlPlane) -> dict[str, str]:
    return controlplane.env | {
        "CADENZA_HTTP_HOST": "127.0.0.1",
        "CADENZA_HTTP_PORT": str(free_port()),
    }


@pytest.mark.parametrize(
    ("override", "says"),
    [
        (
            {"CADENZA_DATABASE_URL": "mysql+pymysql://root:wrong@127.0.0.1:3306/jobs"},
            "access denied: check the user name and password",
        ),
        (
            {"CADENZA_DATABASE_URL": "mysql+pymysql://root:123456@127.0.0.1:3306/no_such_db"},
            "the database does not exist: create it",
        ),
        ({"CADENZA_DATABASE_URL": "not a url"}, "CADENZA_DATABASE_URL is not a database URL"),
        ({"CADENZA_DATABASE_URL": "sqlite:///x.db"}, "Cadenza needs MySQL or MariaDB"),
        ({"CADENZA_HTTP_PORT": "http"}, "CADENZA_HTTP_PORT='http' is not a valid int"),
        ({"CADENZA_LEASE_SECONDS": "2"}, "CADENZA_LEASE_SECONDS='2' is below the minimum"),
        ({"KUBECONFIG": "/nonexistent/kubeconfig"}, "cannot log in to Kubernetes"),
    ],
)
def test_a_wrong_setting_exits_with_one_clear_error(
    base_env: dict[str, str], override: dict[str, str], says: str
) -> None:
    proc = _run(base_env | override)
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "123456" not in proc.stderr and "wrong" not in proc.stderr.replace("wrong@", "")


def test_an_unreachable_database_is_waited_for_with_logged_retries(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "operator.log"
    env = base_env | {
        "CADENZA_DATABASE_URL": f"mysql+pymysql://root:123456@127.0.0.1:{free_port()}/jobs"
    }
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cadenza", "operator"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: log.read_text().count("retrying in") >= 3, 30, "three logged retries")
        assert proc.poll() is None
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        assert all("exception" not in line for line in lines)
        assert any("the server is unreachable" in line["message"] for line in lines)
        # Liveness holds during the outage, readiness does not.
        url = f"http://127.0.0.1:{env['CADENZA_HTTP_PORT']}"
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as resp:
            assert resp.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/readyz", timeout=5)
        assert refused.value.code == 503
        refused.value.close()
    finally:
        proc.terminate()
        proc.wait(20)


def test_an_unreachable_api_server_is_retried_without_tracebacks(
    base_env: dict[str, str], database: str, tmp_path: Path
) -> None:
    dead = tmp_path / "kubeconfig"
    dead.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [
                    {
                        "name": "x",
                        "cluster": {
                            "server": f"https://127.0.0.1:{free_port()}",
                            "insecure-skip-tls-verify": True,
                        },
                    }
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "x", "user": "u"}}],
            }
        )
    )
    log = tmp_path / "operator.log"
    env = base_env | {"KUBECONFIG": str(dead), "CADENZA_DATABASE_URL": database}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cadenza", "operator"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "readiness check failed" in log.read_text(), 30, "a logged retry")
        assert proc.poll() is None
        assert "Traceback" not in log.read_text()
    finally:
        proc.terminate()
        assert proc.wait(20) == 0


ORIGINAL_TABLES = {
    # The original Go system's `jobs` schema, in the shape its users have (names shared with
    # Cadenza's tables, columns not).
    "tasks": "id BIGINT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(255) NOT NULL UNIQUE, "
    "cron_expression VARCHAR(64) NOT NULL, execution_mode VARCHAR(16), "
    "load_balance_strategy VARCHAR(16)",
    "executors": "id BIGINT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(255), "
    "instance_id VARCHAR(255) UNIQUE, base_url VARCHAR(512), health_check_url VARCHAR(512)",
    "task_executions": "id BIGINT AUTO_INCREMENT PRIMARY KEY, task_id BIGINT, status VARCHAR(16)",
}


@pytest.mark.mariadb
def test_a_database_of_another_system_is_refused_and_left_as_it_was(
    base_env: dict[str, str], mariadb_server: mariadb.Server
) -> None:
    with mariadb.scratch_database(mariadb_server) as name:
        url = mariadb_server.url(name)
        for table, columns in ORIGINAL_TABLES.items():
            db.rows(url, f"CREATE TABLE {table} ({columns})")
        db.rows(
            url,
            "INSERT INTO tasks (name, cron_expression) VALUES (%s, %s)",
            "test_task",
            "* * * * *",
        )
        before = db.records(url, "SHOW TABLES")

        proc = _run(base_env | {"CADENZA_DATABASE_URL": url})

        assert proc.returncode == 2, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if "cannot use the database" in ln]
        assert len(lines) == 1, proc.stderr
        assert "task_executions, tasks" in lines[0] and "CADENZA_DATABASE_URL" in lines[0]
        assert "Traceback" not in proc.stderr
        assert db.records(url, "SHOW TABLES") == before  # not even schema_migrations
        assert db.records(url, "SELECT name FROM tasks") == [{"name": "test_task"}]

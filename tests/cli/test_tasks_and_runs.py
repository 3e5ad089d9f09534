"""``cadenza tasks`` and ``cadenza runs`` against a real replica: the original system's body
creates a Task, the table and ``-o json|yaml`` show it with its next run, a trigger prints the id
of a run that exists, suspend and resume change the Task, and the history is listed, read,
followed and cancelled. Refusals end with the documented exit code and one line on stderr."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.api.conftest import Api, Callers
from tests.cli.conftest import BIN, Run, base_env, one_line, table
from tests.support import db

pytestmark = [pytest.mark.controlplane, pytest.mark.mariadb]

BODY = {
    "name": "test_task",
    "cron_expression": "*/10 * * * * *",
    "execution_mode": "parallel",
    "load_balance_strategy": "round_robin",
}
INSERT = (
    "INSERT INTO task_executions (task_uid, namespace, task_name, origin, requested_at, status,"
    " attempt, max_attempts, epoch, created_at, updated_at)"
    " VALUES ('00000000-0000-0000-0000-00000000c11e', %s, %s, 'api', NOW(3), %s, 1, 1, 1,"
    " NOW(3), NOW(3))"
)


def task(api: Api, name: str) -> dict[str, object]:
    found = json.loads(api.kubectl("get", "task", name, "-n", api.namespace, "-o", "json"))
    assert isinstance(found, dict)
    return found


def newest_run(api: Api) -> int:
    (row,) = api.sql("SELECT COALESCE(MAX(id), 0) AS id FROM task_executions")
    return int(row["id"])


@pytest.fixture(scope="module")
def created(api: Api, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``test-task`` made by ``cadenza tasks create -f`` from the original body, verbatim."""
    body = tmp_path_factory.mktemp("bodies") / "task.json"
    body.write_text(json.dumps(BODY))
    env = base_env(api, tmp_path_factory.mktemp("home"))
    done = subprocess.run(
        [str(BIN / "cadenza"), "tasks", "create", "-f", str(body)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"task.cadenza.dev/test-task created in namespace {api.namespace}"
    return "test-task"


def test_the_original_body_creates_the_task(api: Api, created: str) -> None:
    found = task(api, created)
    assert found["spec"] == {  # type: ignore[comparison-overlap]
        **found["spec"],  # type: ignore[dict-item]
        "schedule": "*/10 * * * * *",
        "executionMode": "Parallel",
        "loadBalanceStrategy": "RoundRobin",
    }
    annotations = found["metadata"]["annotations"]  # type: ignore[index]
    assert annotations["cadenza.dev/original-name"] == "test_task"


def test_list_of_every_namespace_has_a_namespace_column(api: Api, cli: Run, created: str) -> None:
    every = cli("tasks", "list", "-A")
    assert every.code == 0, every
    # Other test modules' namespaces may hold a test-task too: this one's must be listed.
    namespaces = [r["NAMESPACE"] for r in table(every.out) if r["NAME"] == created]
    assert api.namespace in namespaces, every.out
    assert cli("tasks", "list", "-A", "-n", api.namespace).code == 2


def test_list_shows_the_task_with_its_next_run(cli: Run, created: str) -> None:
    listing = cli("tasks", "list")
    assert listing.code == 0, listing
    (row,) = [r for r in table(listing.out) if r["NAME"] == created]
    assert row["SCHEDULE"] == "*/10 * * * * *"
    assert (row["MODE"], row["STRATEGY"], row["SUSPENDED"]) == ("Parallel", "RoundRobin", "false")
    assert re.fullmatch(r"in \d+s|\d+s ago", row["NEXT RUN"]), row
    assert list(row) == [
        "NAME", "SCHEDULE", "MODE", "STRATEGY", "NEXT RUN", "LAST RESULT", "FAILURES", "SUSPENDED",
    ]  # fmt: skip

    as_json = json.loads(cli("tasks", "list", "-o", "json").out)
    (item,) = [t for t in as_json["items"] if t["name"] == created]
    assert len(item["nextFireTimes"]) == 5 and as_json["continue"] is None
    as_yaml = yaml.safe_load(cli("tasks", "list", "-o", "yaml", "--state", "active").out)
    assert created in [t["name"] for t in as_yaml["items"]]
    suspended = cli("tasks", "list", "--state", "suspended")
    assert suspended.code == 0 and created not in suspended.out


def test_get_shows_spec_status_and_next_fire_times(cli: Run, api: Api, created: str) -> None:
    human = cli("tasks", "get", "test_task")
    assert human.code == 0, human
    assert re.search(r"^Original name:\s+test_task$", human.out, re.M), human
    assert "schedule: '*/10 * * * * *'" in human.out
    fires = human.out.split("Next fire times:\n", 1)[1].splitlines()
    assert len(fires) == 5 and all(re.search(r"Z \((in \d+s|\d+s ago)\)'?$", f) for f in fires)

    as_yaml = yaml.safe_load(cli("tasks", "get", created, "-o", "yaml").out)
    as_json = json.loads(cli("tasks", "get", created, "-o", "json", "-n", api.namespace).out)
    assert as_yaml["uid"] == as_json["uid"] == task(api, created)["metadata"]["uid"]  # type: ignore[index]


def test_create_from_stdin_and_from_flags(cli: Run, api: Api) -> None:
    piped = cli("tasks", "create", "-f", "-", input=json.dumps({**BODY, "name": "piped_task"}))
    assert piped.code == 0, piped
    assert task(api, "piped-task")["spec"]["schedule"] == "*/10 * * * * *"  # type: ignore[index]

    flags = cli(
        "tasks", "create", "flag_task", "--schedule", "0 3 * * *", "--mode", "sequential",
        "--strategy", "least_loaded", "--executor", "pool-a", "--executor", "pool-b:3",
        "--handler", "reports.nightly", "--payload", '{"day": 1}', "--retries", "2",
        "--label", "team=reports", "--suspended", "-o", "json",
    )  # fmt: skip
    assert flags.code == 0, flags
    assert json.loads(flags.out)["name"] == "flag-task"
    made = task(api, "flag-task")
    spec = made["spec"]
    assert spec["executionMode"] == "Sequential" and spec["suspend"] is True  # type: ignore[index]
    named = [(e["name"], e["weight"]) for e in spec["executors"]]  # type: ignore[index]
    assert named == [("pool-a", 1), ("pool-b", 3)]
    assert spec["payload"] == {"day": 1} and spec["retry"]["maxAttempts"] == 3  # type: ignore[index]
    assert made["metadata"]["labels"] == {"team": "reports"}  # type: ignore[index]


def test_trigger_prints_the_id_of_a_run_that_exists(cli: Run, api: Api, created: str) -> None:
    fired = cli("tasks", "trigger", "test_task", "--idempotency-key", "cli-42")
    assert fired.code == 0, fired
    run = int(fired.out.strip())
    (row,) = api.sql(
        "SELECT trigger_key, origin, task_name FROM task_executions WHERE id = %s", run
    )
    assert row == {"trigger_key": "cli-42", "origin": "manual", "task_name": created}
    again = cli("tasks", "trigger", created, "--idempotency-key", "cli-42", "-o", "json")
    assert json.loads(again.out)["executionId"] == run

    detail = cli("runs", "get", str(run))
    assert detail.code == 0, detail
    assert re.search(rf"^ID:\s+{run}$", detail.out, re.M)
    assert re.search(r"^Trigger key:\s+cli-42$", detail.out, re.M)
    assert "Attempts:" in detail.out and "Result:" in detail.out
    as_json = json.loads(cli("runs", "get", str(run), "-o", "json").out)
    assert as_json["id"] == run and as_json["task"] == created and "attempts" in as_json


def test_suspend_and_resume_change_the_task(cli: Run, api: Api, created: str) -> None:
    paused = cli("tasks", "suspend", "test_task")
    assert paused.code == 0 and paused.out.strip() == "task.cadenza.dev/test-task suspended"
    assert task(api, created)["spec"]["suspend"] is True  # type: ignore[index]
    (row,) = [r for r in table(cli("tasks", "list").out) if r["NAME"] == created]
    assert (row["SUSPENDED"], row["NEXT RUN"]) == ("true", "<none>")

    resumed = cli("tasks", "resume", created, "-o", "json")
    assert resumed.code == 0 and json.loads(resumed.out)["spec"]["suspend"] is False
    assert task(api, created)["spec"]["suspend"] is False  # type: ignore[index]


def test_runs_list_filters_and_pages(cli: Run, api: Api, created: str) -> None:
    ids = [int(cli("tasks", "trigger", created).out) for _ in range(3)]
    listing = cli("runs", "list", "--task", "test_task", "--origin", "manual")
    assert listing.code == 0, listing
    rows = table(listing.out)
    assert {int(r["ID"]) for r in rows} >= set(ids)
    assert all(r["ORIGIN"] == "manual" and r["TASK"] == created for r in rows)

    paged = json.loads(
        cli("runs", "list", "-n", api.namespace, "--origin", "manual", "--limit", "2",
            "--since", "1h", "-o", "json").out
    )  # fmt: skip
    assert [r["id"] for r in paged["items"]] == sorted(ids, reverse=True)[:2]
    assert paged["cursor"]  # more runs remain past --limit
    every = yaml.safe_load(cli("runs", "list", "-A", "--origin", "manual", "-o", "yaml").out)
    assert set(ids) <= {r["id"] for r in every["items"]}
    none = cli("runs", "list", "--task", created, "--until", "2000-01-01T00:00:00Z")
    assert none.code == 0 and none.out == "" and "No runs found." in none.err


def test_follow_prints_a_new_run_within_a_deadline(cli: Run, api: Api, created: str) -> None:
    env = base_env(api, Path("/nonexistent"))
    after = newest_run(api)
    follower = subprocess.Popen(
        [str(BIN / "cadenza"), "runs", "follow", "--task", created, "--origin", "manual",
         "--after", str(after), "--count", "1", "--timeout", "90", "--interval", "0.2",
         "-o", "json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        run = int(cli("tasks", "trigger", created).out)
        out, err = follower.communicate(timeout=120)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    (line,) = out.splitlines()
    assert json.loads(line)["id"] == run


def test_follow_ends_on_ctrl_c_or_its_timeout(cli: Run, api: Api, created: str) -> None:
    follower = subprocess.Popen(
        [str(BIN / "cadenza"), "runs", "follow", "--task", created, "--interval", "0.2"],
        env=base_env(api, Path("/nonexistent")), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert follower.stdout is not None
        header = follower.stdout.readline()  # printed once the newest run is known
        assert header.split()[:3] == ["ID", "TASK", "STATUS"]
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 0 and "Traceback" not in err

    short = cli("runs", "follow", "--task", "never_ran", "--count", "1", "--timeout", "1")
    assert short.code == 6
    assert "saw 0 of 1 runs" in one_line(short)


def test_cancel_ends_a_queued_run(cli: Run, api: Api) -> None:
    with db.connect(api.database_url) as conn, conn.cursor() as cur:
        cur.execute(INSERT, (api.namespace, "cancel-me", "queued"))
        run = int(cur.lastrowid)
    done = cli("runs", "cancel", str(run))
    assert done.code == 0, done
    assert done.out.strip() == f"execution {run} cancelled (was queued)"
    (row,) = api.sql("SELECT status FROM task_executions WHERE id = %s", run)
    assert row["status"] == "cancelled"

    again = cli("runs", "cancel", str(run))
    assert again.code == 1 and "(HTTP 409)" in one_line(again)
    missing = cli("runs", "cancel", "999999999")
    assert missing.code == 4 and "not found" in one_line(missing)


def test_refusals_have_their_exit_codes(
    cli: Run, api: Api, callers: Callers, created: str, tmp_path: Path
) -> None:
    bad_cron = cli("tasks", "create", "bad_cron", "--schedule", "61 * * * *")
    assert bad_cron.code == 1
    assert "cron_expression (--schedule)" in one_line(bad_cron)
    taken = cli("tasks", "create", "-f", "-", input=json.dumps(BODY))
    assert taken.code == 1 and "already exists" in one_line(taken)
    assert cli("tasks", "get", "no_such_task").code == 4
    assert cli("tasks", "trigger", "no_such_task").code == 4

    malformed = tmp_path / "broken.json"
    malformed.write_text('{"name": "x",\n "cron_expression": }')
    broken = cli("tasks", "create", "-f", str(malformed))
    assert broken.code == 2
    assert f"-f {malformed}: not valid JSON" in one_line(broken) and "line 2" in broken.err
    listed = cli("tasks", "create", "-f", "-", input="[1, 2]")
    assert listed.code == 2 and "must hold a JSON object" in one_line(listed)
    mixed = cli("tasks", "create", "-f", str(malformed), "--schedule", "* * * * *")
    assert mixed.code == 2 and "--schedule" in one_line(mixed)
    assert cli("runs", "get", "x1").code == 2

    reader = callers.token("cli-reader", ("get",))
    forbidden = cli("tasks", "trigger", created, "--token", reader)
    assert forbidden.code == 3
    line = one_line(forbidden)
    assert line.startswith("cadenza: error: forbidden:") and "needs the verb 'trigger'" in line
    assert task(api, created)["metadata"]["annotations"].get("cadenza.dev/trigger") != reader  # type: ignore[index]
    cannot_list = cli("tasks", "list", "--token", reader)
    assert cannot_list.code == 3 and "'list'" in one_line(cannot_list)
    stranger = cli("tasks", "list", "--token", "not-a-token")
    assert stranger.code == 3 and "not authenticated" in one_line(stranger)
    anonymous = cli("tasks", "list", env={"CADENZA_TOKEN": None})
    assert anonymous.code == 3 and "CADENZA_TOKEN" in one_line(anonymous)

"""``POST .../trigger``: one manual run, its id in the answer, and a retried request carrying
the same Idempotency-Key fires nothing more."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api

pytestmark = [pytest.mark.controlplane, pytest.mark.mariadb]

BODY = {
    "name": "trigger_me",
    "cron_expression": "*/10 * * * * *",
    "execution_mode": "parallel",
    "load_balance_strategy": "round_robin",
    "enabled": False,  # only manual runs: a trigger fires even while suspended
}


def manual_runs(api: Api) -> list[dict[str, object]]:
    return api.sql(
        "SELECT id, trigger_key, origin FROM task_executions WHERE namespace = %s"
        " AND task_name = 'trigger-me' ORDER BY id",
        api.namespace,
    )


def test_trigger_answers_the_run_id_and_a_retry_fires_once(api: Api) -> None:
    assert api.call("POST", "/api/v1/tasks", BODY).status == 201
    key = {"Idempotency-Key": "deploy-42"}

    first = api.call("POST", "/api/v1/tasks/trigger_me/trigger", headers=key)
    assert first.status == 200, first.body
    run = first.body["executionId"]
    assert isinstance(run, int)
    assert first.body["triggerKey"] == "deploy-42"
    (row,) = api.sql("SELECT trigger_key, origin FROM task_executions WHERE id = %s", run)
    assert row == {"trigger_key": "deploy-42", "origin": "manual"}
    history = api.call("GET", f"/api/v1/executions/{run}")
    assert history.status == 200 and history.body["task"] == "trigger-me"

    again = api.call(
        "POST", f"/api/v1/namespaces/{api.namespace}/tasks/trigger-me/trigger", headers=key
    )
    assert again.status == 200 and again.body["executionId"] == run

    other = api.call("POST", "/api/v1/tasks/trigger_me/trigger")
    assert other.status == 200, other.body
    assert other.body["executionId"] != run
    assert other.body["triggerKey"].startswith("api-")

    # The annotation now holds another value; the retried key still fires nothing new.
    late = api.call("POST", "/api/v1/tasks/trigger_me/trigger", headers=key)
    assert late.status == 200 and late.body["executionId"] == run
    keys = [r["trigger_key"] for r in manual_runs(api)]
    assert keys.count("deploy-42") == 1
    assert len(keys) == 2


def test_trigger_of_a_missing_task_is_404(api: Api) -> None:
    answer = api.call("POST", "/api/v1/tasks/no_such_task/trigger")
    assert answer.status == 404, answer.body
    assert "not found" in answer.body["error"]

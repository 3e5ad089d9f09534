"""The user commands' pure parts: tables, times, rows of the API's answers, and how an answer
becomes an exit code and one line."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import yaml

from cadenza.commands import errors, output, runs, tasks, times
from cadenza.commands.client import refusal
from cadenza.commands.discovery import Target

NOW = datetime(2025, 1, 9, 1, 40, 0, tzinfo=UTC)


def test_table_aligns_columns_without_trailing_spaces() -> None:
    text = output.table(
        ("name", "schedule", "x"), [["a", "*/10 * * * * *", None], ["long-name", 1, True]]
    )
    assert text.splitlines() == [
        "NAME        SCHEDULE         X",
        "a           */10 * * * * *   <none>",
        "long-name   1                true",
    ]


def test_a_cell_is_one_line() -> None:
    assert output.cell("boom\nat line 2") == "boom at line 2"
    assert output.cell("") == "<none>" and output.cell(False) == "false" and output.cell(0) == "0"


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_dump_round_trips_the_answer(fmt: str) -> None:
    answer = {
        "items": [{"name": "ü", "n": 1, "x": None, "nested": {"b": [1, 2]}}],
        "continue": None,
    }
    text = output.dump(answer, fmt)
    assert (json.loads(text) if fmt == "json" else yaml.safe_load(text)) == answer


@pytest.mark.parametrize(
    ("when", "shown"),
    [
        ("2025-01-09T01:40:08Z", "in 8s"),
        ("2025-01-09T01:37:00+00:00", "3m ago"),
        ("2025-01-09T00:35:00Z", "1h5m ago"),
        ("2025-01-08T12:40:00Z", "13h ago"),
        ("2025-01-05T01:40:00Z", "4d ago"),
        ("2025-01-09T01:40:00", "0s ago"),  # MySQL's times come without a zone: UTC
        (None, ""),
        ("not a time", "not a time"),
    ],
)
def test_relative_times(when: str | None, shown: str) -> None:
    assert times.relative(when, NOW) == shown


def test_since_takes_rfc3339_or_a_duration_back() -> None:
    assert times.instant("15m", NOW, "--since") == "2025-01-09T01:25:00Z"
    assert times.instant("2d", NOW, "--since") == "2025-01-07T01:40:00Z"
    assert times.instant("2025-01-09T03:00:00+02:00", NOW, "--until") == "2025-01-09T01:00:00Z"
    for bad in ("yesterday", "15", "2025-01-09", "-5m"):
        with pytest.raises(ValueError, match="--since takes an RFC 3339 time"):
            times.instant(bad, NOW, "--since")


def test_task_row_shows_next_run_last_result_and_failures() -> None:
    task = {
        "name": "test-task",
        "spec": {"schedule": "*/10 * * * * *", "executionMode": "Parallel",
                 "loadBalanceStrategy": "RoundRobin", "suspend": False},
        "status": {"lastExecution": {"phase": "Failed"}, "consecutiveFailures": 2},
        "nextFireTimes": ["2025-01-09T01:40:10Z", "2025-01-09T01:40:20Z"],
    }  # fmt: skip
    assert tasks.row(task, NOW) == [
        "test-task", "*/10 * * * * *", "Parallel", "RoundRobin", "in 10s", "Failed", 2, False,
    ]  # fmt: skip
    suspended = {"name": "t", "spec": {"suspend": True}, "nextFireTimes": []}
    assert tasks.row(suspended, NOW)[4:] == [None, None, 0, True]


def test_run_row_and_duration() -> None:
    run = {
        "id": 7, "task": "t", "status": "succeeded", "origin": "manual", "attempt": 1,
        "maxAttempts": 3, "requestedAt": "2025-01-09T01:37:00Z", "pod": "p",
        "startedAt": "2025-01-09T01:39:01Z", "finishedAt": "2025-01-09T01:39:05Z",
    }  # fmt: skip
    assert runs.row(run, NOW) == [7, "t", "succeeded", "manual", "1/3", "3m ago", "4s", "p"]
    assert runs.duration({"startedAt": "2025-01-09T01:39:01Z"}) is None


def test_task_body_from_flags_uses_the_original_spelling() -> None:
    from cadenza.commands import app

    top, _, _ = app.parser("cadenza", "")
    args = top.parse_args(
        ["tasks", "create", "test_task", "--schedule", "*/10 * * * * *", "--mode", "parallel",
         "--executor", "a", "--executor", "b:3", "--payload", '{"k": [1]}', "--label", "team=x",
         "--suspended", "--retries", "2"]
    )  # fmt: skip
    assert tasks.body_from_flags(args) == {
        "name": "test_task", "cron_expression": "*/10 * * * * *", "execution_mode": "parallel",
        "retries": 2, "executors": ["a", {"name": "b", "weight": 3}], "payload": {"k": [1]},
        "labels": {"team": "x"}, "enabled": False,
    }  # fmt: skip


TARGET = Target("http://api", "t0k", None, False, hint="pass --token")


@pytest.mark.parametrize(
    ("status", "body", "code", "words"),
    [
        (400, {"error": "bad cron", "field": "cron_expression"}, errors.REFUSED,
         ["cron_expression (--schedule): bad cron", "HTTP 400"]),
        (400, {"error": "not an int", "field": "executors.0.weight"}, errors.REFUSED,
         ["executors.0.weight (--executor)"]),
        (409, {"error": "already exists", "field": "name"}, errors.REFUSED, ["already exists"]),
        (401, {"error": "no"}, errors.FORBIDDEN, ["not authenticated", "pass --token"]),
        (403, {"error": 'system:serviceaccount:a:b may not "trigger" tasks.cadenza.dev/x'},
         errors.FORBIDDEN, ["forbidden", "needs the verb 'trigger'"]),
        (404, {"error": "Task a/x not found"}, errors.NOT_FOUND, ["Task a/x not found"]),
        (503, {"error": "the database is unavailable"}, errors.UNAVAILABLE, ["the API failed"]),
        (502, None, errors.UNAVAILABLE, ["Bad Gateway"]),
    ],
)  # fmt: skip
def test_refusals_map_to_exit_codes(status: int, body: object, code: int, words: list[str]) -> None:
    raw = json.dumps(body).encode() if body is not None else b"<html>"
    failure = refusal(status, raw, TARGET, tasks.FLAG_FIELDS)
    assert failure.code == code
    assert "\n" not in failure.message
    for word in words:
        assert word in failure.message


def test_a_401_without_a_token_says_where_to_set_one() -> None:
    anonymous = Target("http://api", None, None, False, hint="pass --token or set CADENZA_TOKEN")
    failure = refusal(401, b"{}", anonymous, {})
    assert failure.code == errors.FORBIDDEN and "CADENZA_TOKEN" in failure.message

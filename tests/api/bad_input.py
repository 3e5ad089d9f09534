"""The bad-input catalogue's table: every kind of malformed input Cadenza accepts, one row each.

A row says where the input goes (``kubectl`` to the API server, the REST ``api`` with the admin's
token, a run's ``callback``, or a ``sidecar``'s dispatch API), what is sent, the status it must be
answered with and what the error must name (the ``field`` of the JSON error, or a word its
message or kubectl's must contain). ``{ns}``, ``{task}``, ``{executor}``, ``{instance}`` and
``{run}`` in paths, bodies and names stand for the module's stored objects (see
``test_bad_input_catalogue.py``). What every row must also leave alone is checked there, not
said here: nothing stored changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

API_VERSION = "cadenza.dev/v1alpha1"
DEFAULT = "default"
"""``auth``: the target's own valid credentials (the admin's token, the dispatch token)."""


@dataclass(frozen=True)
class Case:
    kind: str
    """The catalogue's column: which kind of input the row belongs to."""
    target: str
    """``kubectl``, ``api``, ``callback`` or ``sidecar``."""
    names: str
    """The error's ``field``, or a word its message (kubectl's stderr) must contain."""
    status: int = 400
    method: str = "POST"
    path: str = ""
    body: Any = None
    """A JSON value, sent as the body (``None``: none, unless ``raw`` is given)."""
    raw: bytes | Callable[[], Iterator[bytes]] | None = None
    """Bytes sent as they are, or chunks sent with chunked transfer encoding."""
    auth: bytes | str = DEFAULT
    """The Authorization header's value; ``b""`` sends none."""
    headers: dict[str, str] = field(default_factory=dict)
    manifest: dict[str, Any] | None = None
    """``kubectl apply`` rows: the object applied."""
    says: str = ""
    """A fragment of the explanation the message must also hold."""
    item: bool = False
    """A batch answered 200: the row's status and names are those of its first result."""


def row(case: Case, id: str) -> Any:
    return pytest.param(case, id=id)


def api(kind: str, method: str, path: str, names: str, status: int = 400, **kw: Any) -> Case:
    return Case(kind, "api", names, status, method, path, **kw)


def callback(kind: str, path: str, names: str, status: int = 400, **kw: Any) -> Case:
    return Case(kind, "callback", names, status, "POST", path, **kw)


def sidecar(path: str, names: str, status: int = 400, kind: str = "dispatch", **kw: Any) -> Case:
    return Case(kind, "sidecar", names, status, "POST", path, **kw)


def without_nones(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied; a change to None removes the field."""
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


# -- manifests ---------------------------------------------------------------------------------

ORIGINAL = "cadenza.dev/original-name"


def task(name: str = "bad-task", annotations: dict[str, str] | None = None, **spec: Any) -> Any:
    metadata: dict[str, Any] = {"name": name, "annotations": annotations or {}}
    spec = {"schedule": "@hourly", "suspend": True, "executors": [{"name": "pool"}], **spec}
    return {"apiVersion": API_VERSION, "kind": "Task", "metadata": metadata, "spec": spec}


def executor(name: str = "bad-pool", **spec: Any) -> Any:
    spec = {"selector": {"matchLabels": {"cadenza.dev/executor": name}}, **spec}
    return {"apiVersion": API_VERSION, "kind": "Executor", "metadata": {"name": name}, "spec": spec}


def manifest(kind: str, applied: Any, names: str, says: str = "") -> Case:
    return Case(kind, "kubectl", names, status=0, manifest=applied, says=says)


def schedule(expression: str, says: str) -> Case:
    return manifest("schedule", task(schedule=expression), "spec.schedule", says)


def zone(name: str, says: str) -> Case:
    return manifest("time zone", task(timeZone=name), "spec.timeZone", says)


TASK, EXECUTOR, ANNOTATION = "Task manifest", "Executor manifest", "annotation"
MANIFESTS = [
    row(manifest(TASK, task(timeoutSeconds=0), "spec.timeoutSeconds"), "task-timeout-0"),
    row(manifest(TASK, task(executionMode="Often"), "spec.executionMode"), "task-mode-enum"),
    row(manifest(TASK, task(loadBalanceStrategy="Fast"), "spec.loadBalanceStrategy"),
        "task-strategy-enum"),
    row(manifest(TASK, task(executionMode="Sequential", maxConcurrent=2), "spec.maxConcurrent"),
        "task-max-concurrent-sequential"),
    row(manifest(TASK, task(executors=[{"name": "Bad_Name"}]), "spec.executors[0].name"),
        "task-executor-name"),
    row(manifest(TASK, task(retry={"maxAttempts": 0}), "spec.retry.maxAttempts"),
        "task-retry-attempts-0"),
    row(manifest(TASK, task(retries=3), "spec.retries", "unknown field"), "task-unknown-field"),
    row(manifest(TASK, task(payload=nested(21)), "spec.payload", "nests more than 20"),
        "task-payload-too-deep"),
    row(manifest(TASK, task("{task}", timeoutSeconds=-5), "spec.timeoutSeconds"),
        "task-update-refused"),
    row(schedule("61 * * * *", "minute value 61 out of range 0-59"), "cron-minute-61"),
    row(schedule("0 0 30 2 *", "never occurs in FEB"), "cron-never-fires"),
    row(schedule("* * * *", "must be a 5-field cron expression"), "cron-four-fields"),
    row(schedule("@fortnightly", "a macro such as @hourly"), "cron-unknown-macro"),
    row(schedule("@every 500ms", "a unit below one second"), "cron-every-sub-second"),
    row(schedule("@every 8785h", "maximum interval of 8784h"), "cron-every-too-long"),
    row(schedule("TZ=Europe/Berlin 0 9 * * *", "embeds a time zone"), "cron-embedded-zone"),
    row(manifest("schedule", task("{task}", schedule="*/0 * * * *"), "spec.schedule", "step 0"),
        "cron-update-refused"),
    row(zone("Mars/Olympus", "not a known IANA time zone"), "zone-unknown"),
    row(zone("Europe/Berln", 'did you mean "Europe/Berlin"'), "zone-typo"),
    row(zone("../etc/passwd", "must be an IANA time zone"), "zone-path"),
    row(zone("localtime", "not a known IANA time zone"), "zone-localtime"),
    row(manifest(ANNOTATION, task(annotations={ORIGINAL: "x" * 256}),
                 f"metadata.annotations[{ORIGINAL}]", "at most 255"),
        "annotation-original-name-too-long"),
    row(manifest(ANNOTATION, task(annotations={"cadenza.dev/bad key!": "x"}),
                 "metadata.annotations"), "annotation-bad-key"),
    row(manifest(ANNOTATION, task(annotations={"cadenza.dev/description": "x" * 300_000}),
                 "metadata.annotations", "Too long"), "annotation-too-large"),
    row(manifest(EXECUTOR, executor(port=0), "spec.port"), "executor-port-0"),
    row(manifest(EXECUTOR, executor(scheme="tcp"), "spec.scheme"), "executor-scheme"),
    row(manifest(EXECUTOR, executor(selector={}), "spec.selector"), "executor-empty-selector"),
    row(manifest(EXECUTOR, executor(maxConcurrencyPerPod=0), "spec.maxConcurrencyPerPod"),
        "executor-concurrency-0"),
    row(manifest(EXECUTOR, executor(healthCheck={"periodSeconds": 5, "timeoutSeconds": 6}),
                 "spec.healthCheck.timeoutSeconds"), "executor-health-timeout-over-period"),
    row(manifest(EXECUTOR, executor(healthCheck={"path": "/healthz\r\nHost: evil"}),
                 "spec.healthCheck.path"), "executor-health-path-header"),
    row(manifest(EXECUTOR, executor(replicas=3), "spec.replicas", "unknown field"),
        "executor-unknown-field"),
    row(manifest(EXECUTOR, executor("{executor}", port=70000), "spec.port"),
        "executor-update-refused"),
]  # fmt: skip


# -- REST API bodies and query strings -----------------------------------------------------------

BRIEF = {
    "name": "catalogue_new", "cron_expression": "*/10 * * * * *", "execution_mode": "parallel",
    "load_balance_strategy": "round_robin", "enabled": False,
}  # fmt: skip
REGISTER = {"name": "{executor}", "instance_id": "new-1", "base_url": "http://127.0.0.1:9"}
NO_SCHEDULE = without_nones(BRIEF, {"cron_expression": None})
HISTORY, LIST = "executions history", "tasks list"


def create(changes: dict[str, Any], names: str, status: int = 400, **kw: Any) -> Case:
    path = kw.pop("path", "/api/v1/tasks")
    return api("tasks create", "POST", path, names, status, body=without_nones(BRIEF, changes))


def put(changes: dict[str, Any], names: str, name: str = "{task}", status: int = 400) -> Case:
    body = without_nones({**BRIEF, "name": name}, changes)
    return api("tasks update", "PUT", f"/api/v1/tasks/{name}", names, status, body=body)


def patch(body: Any, names: str, name: str = "{task}", status: int = 400) -> Case:
    return api("tasks patch", "PATCH", f"/api/v1/tasks/{name}", names, status, body=body)


def register(changes: dict[str, Any], names: str, status: int = 400) -> Case:
    body = without_nones(REGISTER, changes)
    return api("executors register", "POST", "/api/v1/executors/register", names, status,
               body=body)  # fmt: skip


def query(kind: str, path: str, names: str, status: int = 400) -> Case:
    return api(kind, "GET", path, names, status)


def raw_create(raw: bytes) -> Case:
    return api("tasks create", "POST", "/api/v1/tasks", "body", raw=raw)


BEAT = "/api/v1/executors/{instance}/heartbeat"
STATUS = "/api/v1/executors/{instance}/status"
TRIGGER = "/api/v1/tasks/{task}/trigger"
KEY = "Idempotency-Key"

API = [
    row(raw_create(b"{not json"), "create-not-json"),
    row(api("tasks create", "POST", "/api/v1/tasks", "body", body=[BRIEF]), "create-array"),
    row(raw_create(b'{"name": "x", "timeout_seconds": NaN}'), "create-nan"),
    row(raw_create(b"[" * 100_000 + b"]" * 100_000), "create-deep-json"),
    row(create({"name": None}, "name"), "create-no-name"),
    row(create({"name": "a b"}, "name"), "create-name-not-dns"),
    row(create({"cron_expression": None}, "cron_expression"), "create-no-schedule"),
    row(create({"cron_expression": "*/10 * *"}, "cron_expression"), "create-bad-cron"),
    row(create({"time_zone": "Mars/Olympus"}, "time_zone"), "create-bad-zone"),
    row(create({"execution_mode": "parallel_ish"}, "execution_mode"), "create-bad-mode"),
    row(create({"retries": "3"}, "retries"), "create-retries-string"),
    row(create({"enabled": 1}, "enabled"), "create-enabled-int"),
    row(create({"unknown": 1}, "unknown"), "create-unknown-field"),
    row(create({"schedule": "@hourly"}, "schedule"), "create-both-spellings"),
    row(create({"timeout_seconds": 0}, "timeout_seconds"), "create-timeout-0"),
    row(create({"executors": [{"name": "Bad_Name"}]}, "executors[0].name"), "create-executor"),
    row(create({"payload": nested(25)}, "payload"), "create-payload-too-deep"),
    row(create({"namespace": "other"}, "namespace", path="/api/v1/namespaces/{ns}/tasks"),
        "create-namespace-mismatch"),
    row(create({"namespace": "Bad_NS"}, "namespace"), "create-namespace-not-dns"),
    row(create({"name": "{task}"}, "name", 409), "create-name-taken"),
    row(put({"name": "other"}, "name"), "update-name-mismatch"),
    row(put({"cron_expression": "61 * * * *"}, "cron_expression"), "update-bad-cron"),
    row(put({"payload": float("inf")}, "body"), "update-infinity"),
    row(put({}, "name", name="Bad_Name!"), "update-url-name"),
    row(put({}, "no-such-task", name="no_such_task", status=404), "update-missing-task"),
    row(patch({"retries": 100}, "retries"), "patch-retries-100"),
    row(patch({"execution_mode": "sequential", "maxConcurrent": 2}, "maxConcurrent"),
        "patch-engine-refuses"),
    row(patch({"labels": {"a": 1}}, "labels.a"), "patch-label-not-string"),
    row(patch({"labels": {"bad key!": "x"}}, "bad key!", status=422), "patch-label-key-refused"),
    row(patch({"time_zone": "Europe/Berln"}, "time_zone"), "patch-zone-typo"),
    row(patch({"description": "x" * 5000}, "description"), "patch-description-too-long"),
    row(patch({"startingDeadlineSeconds": 0}, "startingDeadlineSeconds"), "patch-deadline-0"),
    row(patch("suspend", "body"), "patch-string-body"),
    row(patch({}, "no-such-task", name="no_such_task", status=404), "patch-missing-task"),
    row(register({"instance_id": None}, "instance_id"), "register-no-instance"),
    row(register({"instance_id": "bad id!"}, "instance_id"), "register-bad-instance"),
    row(register({"base_url": "ftp://x/"}, "base_url"), "register-base-url-scheme"),
    row(register({"base_url": "not a url"}, "base_url"), "register-base-url-prose"),
    row(register({"health_check_url": "http://h:port/"}, "health_check_url"),
        "register-health-url-port"),
    row(register({"base_url": "http://127.0.0.1:99999"}, "base_url"), "register-base-url-port"),
    row(register({"name": "Bad_Name!"}, "name"), "register-bad-name"),
    row(register({"heartbeat_seconds": 0}, "heartbeat_seconds"), "register-heartbeat-0"),
    row(register({"tasks": [{"task_name": "no_such_task"}]}, "tasks.0.cron_expression"),
        "register-new-task-without-cron"),
    row(register({"tasks": [{"task_name": "x", "cron_expression": "61 * * * *"}]},
                 "tasks.0.cron_expression"), "register-new-task-bad-cron"),
    row(register({"tasks": [{"task_name": "a b"}]}, "tasks.0.task_name"), "register-task-name"),
    row(register({"name": "other-pool", "instance_id": "{instance}"}, "instance_id", 409),
        "register-instance-taken"),
    row(api("executors heartbeat", "POST", BEAT, "surprise", body={"surprise": 1}),
        "heartbeat-unknown-field"),
    row(api("executors heartbeat", "POST", BEAT, "body", raw=b"{beat"), "heartbeat-not-json"),
    row(api("executors heartbeat", "POST", "/api/v1/executors/bad%20id!/heartbeat",
            "instance_id", body={}), "heartbeat-bad-instance"),
    row(api("executors heartbeat", "POST", "/api/v1/executors/nobody/heartbeat", "nobody", 404,
            body={}), "heartbeat-unknown-instance"),
    row(api("executors status", "PUT", STATUS, "status", body={"status": "asleep"}),
        "status-unknown"),
    row(api("executors status", "PUT", STATUS, "status", body={}), "status-missing"),
    row(api("executors status", "PUT", STATUS, "body", body=["online"]), "status-array"),
    row(api("executors deregister", "DELETE", "/api/v1/executors/bad%20id!", "instance_id"),
        "deregister-bad-instance"),
    row(api("executors deregister", "DELETE", "/api/v1/executors/nobody", "nobody", 404),
        "deregister-unknown-instance"),
    row(api("trigger", "POST", TRIGGER, KEY, headers={KEY: "x" * 129}), "trigger-key-too-long"),
    row(api("trigger", "POST", TRIGGER, KEY, headers={KEY: "deploy 42"}), "trigger-key-space"),
    row(api("trigger", "POST", TRIGGER, KEY, headers={KEY: "d\u00e9ploy"}), "trigger-key-latin1"),
    row(api("trigger", "POST", "/api/v1/tasks/no_such_task/trigger", "no-such-task", 404,
            headers={KEY: "k1"}), "trigger-missing-task"),
    row(api("trigger", "POST", "/api/v1/tasks/Bad_Name!/trigger", "name"), "trigger-bad-name"),
    row(query(HISTORY, "/api/v1/executions?status=done", "status"), "history-status"),
    row(query(HISTORY, "/api/v1/executions?origin=cron,nowhere", "origin"), "history-origin"),
    row(query(HISTORY, "/api/v1/executions?since=yesterday", "since"), "history-since-prose"),
    row(query(HISTORY, "/api/v1/executions?until=2030-01-01T00:00:00", "until"),
        "history-until-no-zone"),
    row(query(HISTORY, "/api/v1/executions?since=0001-01-01T00:00:00Z", "since"),
        "history-since-year-1"),
    row(query(HISTORY, "/api/v1/executions?limit=0", "limit"), "history-limit-0"),
    row(query(HISTORY, "/api/v1/executions?limit=501", "limit"), "history-limit-501"),
    row(query(HISTORY, "/api/v1/executions?limit=ten", "limit"), "history-limit-word"),
    row(query(HISTORY, "/api/v1/executions?cursor=garbage", "cursor"), "history-cursor-garbage"),
    row(query(HISTORY, "/api/v1/executions?cursor=djE6LTU", "cursor"), "history-cursor-negative"),
    row(query(HISTORY, "/api/v1/executions?namespace=Bad_NS", "namespace"), "history-namespace"),
    row(query(HISTORY, "/api/v1/tasks/{task}/executions?status=running,done", "status"),
        "history-per-task-status"),
    row(query(HISTORY, "/api/v1/executions/abc", "id"), "history-run-id-word"),
    row(query(HISTORY, "/api/v1/executions/0", "id"), "history-run-id-0"),
    row(query(HISTORY, "/api/v1/executions/99999999999999999999", "id"), "history-run-id-huge"),
    row(query(HISTORY, "/api/v1/executions/999999999", "999999999", 404), "history-run-missing"),
    row(query(LIST, "/api/v1/tasks?state=sleepy", "state"), "tasks-list-state"),
    row(query(LIST, "/api/v1/tasks?limit=-1", "limit"), "tasks-list-limit"),
    row(query(LIST, "/api/v1/tasks?labelSelector=a%20b%20c!", "labelSelector"),
        "tasks-list-selector"),
    row(query(LIST, "/api/v1/tasks?continue=garbage", "continue"), "tasks-list-continue"),
    row(query(LIST, "/api/v1/tasks?allNamespaces=yes", "allNamespaces"), "tasks-list-all-word"),
    row(query(LIST, "/api/v1/tasks?allNamespaces=true&namespace=default", "allNamespaces"),
        "tasks-list-all-and-namespace"),
    row(query(LIST, "/api/v1/namespaces/default/tasks?allNamespaces=true", "allNamespaces"),
        "tasks-list-all-in-namespace-path"),
    row(api("cancel", "POST", "/api/v1/executions/abc/cancel", "id"), "cancel-id-word"),
    row(api("cancel", "POST", "/api/v1/executions/999999999/cancel", "999999999", 404),
        "cancel-missing-run"),
    row(api("cancel", "POST", "/api/v1/executions/{run}/cancel", "already over", 409),
        "cancel-run-over"),
]  # fmt: skip


# -- callbacks -----------------------------------------------------------------------------------

REPORT = {
    "executionId": "{run}-1", "status": "succeeded", "attempt": 1, "pod": "pool-0",
    "startedAt": "2030-01-01T00:00:00.000Z", "finishedAt": "2030-01-01T00:00:01.000Z",
    "result": {"ok": True}, "error": None, "exitCode": None,
}  # fmt: skip
FORGED = "Bearer not-the-run-token"
ONE = "/api/v1/callbacks/{run}"
BATCH = "/api/v1/callbacks"


def report(changes: dict[str, Any], names: str, status: int = 400) -> Case:
    body = without_nones(REPORT, changes)
    return callback("callback", ONE, names, status, body=body, auth=FORGED)


def raw_report(raw: bytes) -> Case:
    return callback("callback", ONE, "body", raw=raw, auth=FORGED)


def item(changes: dict[str, Any], names: str, status: int = 400) -> Case:
    url = "http://any-replica/api/v1/callbacks/{run}"
    body = {"callbacks": [without_nones({**REPORT, "callbackUrl": url, "token": "x"}, changes)]}
    return callback("batch callback", BATCH, names, status, body=body, auth=b"", item=True)


def raw_batch(raw: bytes, names: str) -> Case:
    return callback("batch callback", BATCH, names, raw=raw, auth=b"")


CALLBACKS = [
    row(raw_report(b"{status: succeeded"), "callback-not-json"),
    row(raw_report(b'{"status": "succeeded", "attempt": 1, "result": NaN}'), "callback-nan"),
    row(raw_report(b"[" * 100_000 + b"]" * 100_000), "callback-deep-json"),
    row(callback("callback", ONE, "body", body=[REPORT], auth=FORGED), "callback-array"),
    row(report({"status": None}, "status"), "callback-no-status"),
    row(report({"status": "running"}, "status"), "callback-status-running"),
    row(report({"attempt": 0}, "attempt"), "callback-attempt-0"),
    row(report({"attempt": "1"}, "attempt"), "callback-attempt-string"),
    row(report({"exitCode": 1.5}, "exitCode"), "callback-exit-code-float"),
    row(report({"error": ["boom"]}, "error"), "callback-error-list"),
    row(report({"startedAt": "yesterday"}, "startedAt"), "callback-started-prose"),
    row(report({"finishedAt": "2030-01-01T00:00:01"}, "finishedAt"), "callback-no-zone"),
    row(callback("callback", "/api/v1/callbacks/not-a-run", "not-a-run", 404, body=REPORT,
                 auth=FORGED), "callback-not-a-run"),
    row(report({}, "token", status=403), "callback-forged-token"),
    row(raw_batch(b"{nope", "body"), "batch-not-json"),
    row(raw_batch(b"[]", "body"), "batch-array"),
    row(raw_batch(b"{}", "callbacks"), "batch-no-callbacks"),
    row(raw_batch(b'{"callbacks": {}}', "callbacks"), "batch-callbacks-object"),
    row(raw_batch(json.dumps({"callbacks": [{}] * 1001}).encode(), "callbacks"),
        "batch-1001-items"),
    row(item({"callbackUrl": None}, "callbackUrl"), "batch-item-no-url"),
    row(item({"token": None}, "token"), "batch-item-no-token"),
    row(item({"status": "done"}, "status"), "batch-item-status"),
    row(item({"attempt": True}, "attempt"), "batch-item-attempt-bool"),
    row(callback("batch callback", BATCH, "callbacks[0]", body={"callbacks": [7]}, auth=b"",
                 item=True), "batch-item-not-object"),
    row(item({}, "token", status=403), "batch-item-forged-token"),
]  # fmt: skip


# -- dispatch to a sidecar -----------------------------------------------------------------------

DISPATCH = {
    "executionId": "catalogue-run", "taskUid": "00000000-0000-0000-0000-000000000001",
    "task": "{ns}/{task}", "epoch": 7, "handler": "echo", "payload": None,
    "scheduledAt": "2030-01-01T00:00:00Z", "attempt": 1, "timeoutSeconds": 30,
    "callbackUrl": "http://127.0.0.1:9/api/v1/callbacks/1", "callbackToken": "t",
}  # fmt: skip
RUN = "/v1/executions"
RUNS = "/v1/executions:batch"


def dispatch(changes: dict[str, Any], names: str) -> Case:
    return sidecar(RUN, names, body=without_nones(DISPATCH, changes))


DISPATCHES = [
    row(dispatch({"executionId": ""}, "executionId"), "dispatch-id-empty"),
    row(dispatch({"executionId": "x" * 129}, "executionId"), "dispatch-id-too-long"),
    row(dispatch({"taskUid": None}, "taskUid"), "dispatch-no-task-uid"),
    row(dispatch({"task": "no-namespace"}, "task"), "dispatch-task-no-slash"),
    row(dispatch({"epoch": "3"}, "epoch"), "dispatch-epoch-string"),
    row(dispatch({"handler": ["echo"]}, "handler"), "dispatch-handler-list"),
    row(dispatch({"scheduledAt": "2030-13-01T00:00:00Z"}, "scheduledAt"), "dispatch-month-13"),
    row(dispatch({"attempt": 0}, "attempt"), "dispatch-attempt-0"),
    row(dispatch({"timeoutSeconds": "30"}, "timeoutSeconds"), "dispatch-timeout-string"),
    row(dispatch({"callbackUrl": "ftp://op/cb"}, "callbackUrl"), "dispatch-callback-ftp"),
    row(dispatch({"callbackToken": None}, "callbackToken"), "dispatch-no-callback-token"),
    row(sidecar(RUN, "body", raw=b"{not json"), "dispatch-not-json"),
    row(sidecar(RUN, "body", raw=b"\xff\xfe\x00"), "dispatch-not-utf8"),
    row(sidecar(RUN, "body", raw=b'{"executionId": NaN}'), "dispatch-nan"),
    row(sidecar(RUN, "body", raw=b"[" * 100_000 + b"]" * 100_000), "dispatch-deep-json"),
    row(sidecar(RUNS, "body", raw=b"[]"), "dispatch-batch-array"),
    row(sidecar(RUNS, "executions", raw=b'{"executions": {"a": 1}}'), "dispatch-batch-object"),
    row(sidecar(RUNS, "executions[0]", body={"executions": ["x"]}, item=True),
        "dispatch-batch-item-not-object"),
    row(sidecar(RUNS, "attempt", body={"executions": [{**DISPATCH, "attempt": 0}]}, item=True),
        "dispatch-batch-item-attempt-0"),
]  # fmt: skip


# -- tokens --------------------------------------------------------------------------------------

TOKEN_ROUTES = {
    "api": ("POST", "/api/v1/tasks", BRIEF),
    "callback": ("POST", ONE, REPORT),
    "sidecar": ("POST", RUN, DISPATCH),
}
BAD_TOKENS = {
    "missing": b"",
    "wrong": b"Bearer not-a-token-anyone-gave-out",
    "not-utf8": b"Bearer \xff\xfe\x80token",
    "wrong-scheme": b"Basic dXNlcjpwYXNz",
    "scheme-only": b"Bearer",
}


def token(target: str, kind: str, header: bytes) -> Case:
    """A callback's bearer token that is wrong (whatever its bytes) is the run's business: 403,
    not this run's token. The rest is 401."""
    method, path, body = TOKEN_ROUTES[target]
    forged = target == "callback" and kind in ("wrong", "not-utf8")
    names, status = ("token", 403) if forged else ("Authorization", 401)
    return Case("token", target, names, status, method, path, body, auth=header)


TOKENS = [
    row(token(target, kind, header), f"token-{target}-{kind}")
    for target in TOKEN_ROUTES
    for kind, header in BAD_TOKENS.items()
]


# -- oversized payloads --------------------------------------------------------------------------

MIB = 1024 * 1024
SIDECAR_BATCH_BYTES = 65536
"""The catalogue's sidecar runs with ``--max-batch-bytes`` this small."""


def chunks(size: int, prefix: bytes) -> Callable[[], Iterator[bytes]]:
    """``size`` bytes (``prefix``, then spaces) sent chunked: with no Content-Length, the server
    must count what it reads."""

    def produce() -> Iterator[bytes]:
        yield prefix
        left = size - len(prefix)
        while left > 0:
            yield b" " * min(MIB, left)
            left -= MIB

    return produce


BIG = "x" * (MIB + 1)
OVERSIZED = [
    row(api("oversized", "POST", "/api/v1/tasks", "body", 413, body={**BRIEF, "payload": BIG}),
        "oversized-task-create"),
    row(api("oversized", "PATCH", "/api/v1/tasks/{task}", "body", 413,
            raw=chunks(MIB + 1, b'{"payload": "')), "oversized-task-patch-chunked"),
    row(api("oversized", "POST", "/api/v1/executors/register", "body", 413,
            body={**REGISTER, "tasks": [{"task_name": "t" * 60}] * 20_000}),
        "oversized-register"),
    row(callback("oversized", ONE, "body", 413, body={**REPORT, "result": BIG}, auth=FORGED),
        "oversized-callback"),
    row(callback("oversized", BATCH, "body", 413, raw=chunks(32 * MIB + 1, b'{"callbacks": ['),
                 auth=b""), "oversized-batch-callback"),
    row(sidecar(RUN, "body", 413, "oversized", body={**DISPATCH, "payload": BIG}),
        "oversized-dispatch"),
    row(sidecar(RUNS, "body", 413, "oversized",
                body={"executions": [{**DISPATCH, "payload": "x" * SIDECAR_BATCH_BYTES}]}),
        "oversized-dispatch-batch"),
]  # fmt: skip

CASES = [*MANIFESTS, *API, *CALLBACKS, *DISPATCHES, *TOKENS, *OVERSIZED]

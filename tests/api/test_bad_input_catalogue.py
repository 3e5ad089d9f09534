"""The bad-input catalogue: every kind of malformed input, one row each
(:mod:`tests.api.bad_input`), sent to the real components of one stack shared by the module; each
row must be answered with a clear error naming the field, never a 500, and change nothing stored.

The stack: the kube-apiserver with Cadenza's CRDs and the operator's validating webhook
registered for the module's namespace, one leading replica serving the REST API, the webhook and
the callbacks (the ``api`` fixture), MariaDB, and one sidecar process on its own 127.0.0.x
address. Stored beforehand: a suspended Task, an Executor registered from outside the cluster
with one instance, and one run of the Task, over (cancelled, or failed on that instance).

"Nothing stored changes" is checked around every row: the Tasks and Executors of the namespace
(spec, labels, annotations, generation; their status is the leader's to write), every row of the
module's database but the leader's own bookkeeping (leadership, pod health, balancer state,
``updated_at`` stamps), and the sidecar's runs and spool.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from cadenza.devenv.controlplane import ControlPlane, free_port
from tests.api.bad_input import CASES, DEFAULT, DISPATCH, SIDECAR_BATCH_BYTES, Case
from tests.api.conftest import Api
from tests.integration.test_admission import (
    ServingPki,
    WebhookReplica,
    issue_serving_pki,
    registered,
)
from tests.sidecar.conftest import SidecarLauncher, SidecarProcess
from tests.support import db, wait_for

pytestmark = [pytest.mark.controlplane, pytest.mark.mariadb]

TASK, EXECUTOR, INSTANCE = "catalogue-task", "catalogue-pool", "catalogue-1"
NOT_STORED = frozenset({"scheduler_instances", "leader_epochs", "executor_instances",
                        "load_balance_state", "schema_migrations"})  # fmt: skip
"""Tables the leader keeps writing on its own (leadership, pod health, balancer state)."""
VOLATILE = frozenset({"updated_at"})


@pytest.fixture(scope="module")
def webhook_tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, ServingPki]:
    return free_port(), issue_serving_pki(tmp_path_factory.mktemp("webhook-pki"))


@pytest.fixture(scope="module")
def api_env(webhook_tls: tuple[int, ServingPki]) -> dict[str, str]:
    port, pki = webhook_tls
    return {
        "CADENZA_WEBHOOK_HOST": "127.0.0.1",
        "CADENZA_WEBHOOK_PORT": str(port),
        "CADENZA_WEBHOOK_CERT_FILE": str(pki.cert_file),
        "CADENZA_WEBHOOK_KEY_FILE": str(pki.key_file),
    }


@pytest.fixture(scope="module")
def webhook(
    controlplane: ControlPlane, api: Api, webhook_tls: tuple[int, ServingPki]
) -> Iterator[None]:
    assert api.replicas is not None
    replica = WebhookReplica(api.replicas, *webhook_tls)
    with registered(controlplane, api.namespace, replica):
        yield


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    """A sidecar whose handler is nowhere: nothing it is sent may get as far as running."""
    launcher = SidecarLauncher(tmp_path_factory.mktemp("catalogue-sidecar"))
    batch_limit = ("--max-batch-bytes", str(SIDECAR_BATCH_BYTES))
    yield launcher.start(handler_url="http://127.0.0.1:9/run", extra_args=batch_limit)
    launcher.stop_all()


@pytest.fixture(scope="module")
def stored(api: Api, webhook: None) -> dict[str, str]:
    """What the rows must leave alone, created through the API; the placeholders of the table."""
    body = {"name": TASK, "cron_expression": "@hourly", "enabled": False}
    assert api.call("POST", "/api/v1/tasks", body).status == 201
    registration = {"name": EXECUTOR, "instance_id": INSTANCE, "base_url": "http://127.0.0.1:9"}
    answer = api.call("POST", "/api/v1/executors/register", registration)
    assert answer.status == 201, answer.body
    triggered = api.call("POST", f"/api/v1/tasks/{TASK}/trigger")
    assert triggered.status == 200, triggered.body
    run = triggered.body["executionId"]
    # Over either way: cancelled now, or already failed on the instance nothing listens at.
    assert api.call("POST", f"/api/v1/executions/{run}/cancel").status in (200, 409)
    wait_for(
        lambda: (
            api.sql("SELECT 1 FROM tasks WHERE name = %s", TASK)
            and api.sql("SELECT 1 FROM executors WHERE name = %s", EXECUTOR)
        ),
        30,
        "the leader to mirror the stored objects",
    )
    return {"ns": api.namespace, "task": TASK, "executor": EXECUTOR, "instance": INSTANCE,
            "run": str(run)}  # fmt: skip


@pytest.fixture(scope="module")
def custom_objects(controlplane: ControlPlane) -> Iterator[Any]:
    with kubernetes.config.new_client_from_config(config_file=str(controlplane.kubeconfig)) as c:
        yield kubernetes.client.CustomObjectsApi(c)


# -- what is stored --------------------------------------------------------------------------


def kube_objects(custom: Any, namespace: str) -> dict[str, Any]:
    found = {}
    for plural in ("tasks", "executors"):
        listed = custom.list_namespaced_custom_object("cadenza.dev", "v1alpha1", namespace, plural)
        for item in listed["items"]:
            meta = item["metadata"]
            found[f"{plural}/{meta['name']}"] = (
                meta["uid"], meta.get("generation"), meta.get("labels"),
                meta.get("annotations"), item.get("spec"),
            )  # fmt: skip
    return found


def database_rows(database_url: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    with db.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SHOW TABLES")
        tables = sorted(name for (name,) in cur.fetchall() if name not in NOT_STORED)
        for table in tables:
            cur.execute(f"SELECT * FROM `{table}`")
            columns = [c[0] for c in cur.description]
            found[table] = sorted(
                (
                    tuple((k, v) for k, v in zip(columns, values, strict=True) if k not in VOLATILE)
                    for values in cur.fetchall()
                ),
                key=repr,
            )
    return found


def sidecar_state(sidecar: SidecarProcess) -> tuple[Any, ...]:
    _, health = send(sidecar.host, sidecar.port, "GET", "/healthz", None, b"", {})
    auth = f"Bearer {sidecar.token}".encode()
    run, _ = send(sidecar.host, sidecar.port, "GET", f"/v1/executions/{DISPATCH['executionId']}",
                  None, auth, {})  # fmt: skip
    return health["inFlight"], health["pendingCallbacks"], run, sidecar.spooled()


def everything(api: Api, custom: Any, sidecar: SidecarProcess) -> dict[str, Any]:
    return {
        "kubernetes": kube_objects(custom, api.namespace),
        "mysql": database_rows(api.database_url),
        "sidecar": sidecar_state(sidecar),
    }


# -- sending ---------------------------------------------------------------------------------


def send(
    host: str,
    port: int,
    method: str,
    path: str,
    body: Any,
    auth: bytes,
    headers: dict[str, str],
) -> tuple[int, Any]:
    """One request by http.client, which sends header bytes as they are (not UTF-8 too) and an
    iterator of chunks chunked; the status and the body, decoded when it is JSON."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.putheader("Content-Type", "application/json")
        if auth:
            conn.putheader("Authorization", auth)
        for key, value in headers.items():
            conn.putheader(key, value.encode("latin-1"))
        if isinstance(body, bytes):
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
        elif body is None:
            conn.putheader("Content-Length", "0")
            conn.endheaders()
        else:
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            for chunk in body():
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.send(b"0\r\n\r\n")
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw.decode(errors="replace")


def filled(text: str, places: dict[str, str]) -> str:
    for key, value in places.items():
        text = text.replace("{" + key + "}", value)
    return text


def request_of(case: Case, places: dict[str, str]) -> tuple[Any, bytes]:
    """The body to send (bytes, or a chunk iterator's factory) and the Authorization value."""
    if case.raw is not None:
        body: Any = case.raw
    elif case.body is not None:
        body = filled(json.dumps(case.body), places).encode()
    else:
        body = None
    return body, case.auth.encode() if isinstance(case.auth, str) else case.auth


def answer_of(case: Case, api: Api, sidecar: SidecarProcess, places: dict[str, str]) -> Any:
    body, auth = request_of(case, places)
    path = filled(case.path, places)
    if case.target == "sidecar":
        where: tuple[str, int] = (sidecar.host, sidecar.port)
        auth = f"Bearer {sidecar.token}".encode() if case.auth == DEFAULT else auth
    else:
        host, _, port = api.url.removeprefix("http://").partition(":")
        where = (host, int(port))
        auth = f"Bearer {api.token}".encode() if case.auth == DEFAULT else auth
    status, answer = send(*where, case.method, path, body, auth, case.headers)
    assert status != 500, answer
    if case.item:
        assert status == 200, answer
        (answer,) = answer["results"]
        status = answer["status"]
        answer = answer.get("body", answer)  # the replica nests each item's body
    assert status == case.status, answer
    return answer


def refusal_of(case: Case, api: Api, places: dict[str, str]) -> str:
    applied = filled(json.dumps(case.manifest), places)
    out = api.plane.kubectl("apply", "-n", api.namespace, "-f", "-", input=applied, check=False)
    assert out.returncode != 0, f"applied: {out.stdout}"
    return out.stderr


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_naming_the_field_and_changes_nothing(
    case: Case,
    api: Api,
    stored: dict[str, str],
    sidecar: SidecarProcess,
    custom_objects: Any,
) -> None:
    names = filled(case.names, stored)
    before = everything(api, custom_objects, sidecar)
    if case.target == "kubectl":
        stderr = refusal_of(case, api, stored)
        assert names in stderr and case.says in stderr, stderr
    else:
        answer = answer_of(case, api, sidecar, stored)
        assert isinstance(answer, dict) and answer.get("error"), answer
        assert answer.get("field") == names or names in answer["error"], answer
    assert everything(api, custom_objects, sidecar) == before


def test_every_route_family_and_kind_has_rows() -> None:
    kinds = {param.values[0].kind for param in CASES}
    assert kinds >= {
        "Task manifest", "Executor manifest", "schedule", "time zone", "annotation",
        "tasks create", "tasks update", "tasks patch", "tasks list", "executors register",
        "executors heartbeat", "executors status", "executors deregister", "trigger",
        "executions history", "cancel", "callback", "batch callback", "dispatch", "token",
        "oversized",
    }  # fmt: skip
    ids = [param.id for param in CASES]
    assert len(ids) == len(set(ids))

"""A PUT or PATCH of a Task that changed underneath it, provoked without a race on the real API
server.

The REST API reads the Task, changes it and replaces it at the version it read. To change the
Task in between, every time, a validating admission webhook served by the test is registered for
the module's namespace: when it is sent the replace that carries the test's marker, it first
writes the Task itself (another writer), then allows the replace. The API server finds the
object moved on under the replace and answers it 409 Conflict. What the REST API answers depends
on what moved: another writer's spec is a 409 to the caller, who must read the Task again; a
status write (the leader writes status all the time) is tried again, and the change goes through.
"""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cadenza.api.mapping import DESCRIPTION
from tests.api.conftest import Api
from tests.integration.test_admission import issue_serving_pki, webhook_configuration
from tests.support import wait_for

pytestmark = [pytest.mark.controlplane, pytest.mark.mariadb]

PROBE = "cadenza.test/probe"
"""An annotation the webhook refuses: a dry run carrying it shows the webhook is in place."""


class Interloper:
    """The webhook: on the first replace of a Task whose description is an armed marker, it
    makes that marker's write, then allows; every replace is recorded by its description."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[str, Callable[[], None]] = {}
        self.seen: list[str] = []

    def arm(self, marker: str, write: Callable[[], None]) -> None:
        with self._lock:
            self._armed[marker] = write

    def review(self, request: dict[str, Any]) -> dict[str, Any]:
        annotations = (request.get("object") or {}).get("metadata", {}).get("annotations") or {}
        answer: dict[str, Any] = {"uid": request["uid"], "allowed": PROBE not in annotations}
        if not answer["allowed"]:
            answer["status"] = {"code": 403, "message": "probe refused"}
            return answer
        marker = str(annotations.get(DESCRIPTION, ""))
        with self._lock:
            self.seen.append(marker)
            write = self._armed.pop(marker, None)
        if write is not None:
            write()  # through the API server, while it holds the replace
        return answer

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        review = self.review

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                answer = {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "response": review(body["request"]),
                }
                raw = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


@pytest.fixture(scope="module")
def interloper(api: Api, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Interloper]:
    """The webhook served over TLS on 127.0.0.1 and registered for the module's namespace,
    sent only replaces of Tasks (not their status)."""
    pki = issue_serving_pki(tmp_path_factory.mktemp("interloper-pki"))
    made = Interloper()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), made.handler())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="interloper")
    thread.start()
    name = f"interloper-{api.namespace}"
    config = webhook_configuration(name, api.namespace, server.server_port, pki.ca_pem)
    hook = config["webhooks"][0]
    hook["name"] = "interloper.test.cadenza.dev"
    hook["timeoutSeconds"] = 20  # it writes through the API server before it answers
    hook["rules"][0].update(resources=["tasks"], operations=["UPDATE"])
    try:
        api.kubectl("apply", "-f", "-", input=json.dumps(config))
        body = {"name": "probed", "schedule": "@hourly", "enabled": False}
        assert api.call("POST", "/api/v1/tasks", body).status == 201

        def refused() -> bool:
            out = api.plane.kubectl(
                "annotate", "--dry-run=server", "-n", api.namespace, "tasks.cadenza.dev",
                "probed", f"{PROBE}=1", check=False,
            )  # fmt: skip
            return out.returncode != 0 and "probe refused" in out.stderr

        wait_for(refused, 60, "the interloper webhook to be consulted")
        yield made
    finally:
        api.kubectl("delete", "validatingwebhookconfiguration", name, "--ignore-not-found")
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def stored(api: Api, name: str) -> dict[str, Any]:
    out = api.kubectl("get", "tasks.cadenza.dev", name, "-n", api.namespace, "-o", "json")
    return dict(json.loads(out))


def writer(api: Api, name: str, patch: dict[str, Any], *flags: str) -> Callable[[], None]:
    """Another writer's merge patch of the Task (``--subresource=status`` for its status)."""
    return lambda: api.plane.kubectl(
        "patch", "tasks.cadenza.dev", name, "-n", api.namespace, "--type=merge",
        "-p", json.dumps(patch), *flags,
    )  # fmt: skip


def contested(api: Api, name: str) -> str:
    body = {"name": name, "schedule": "@hourly", "enabled": False}
    assert api.call("POST", "/api/v1/tasks", body).status == 201
    return name


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("PATCH", {}),
        ("PUT", {"name": "contested-put", "schedule": "@hourly", "enabled": False}),
    ],
)
def test_a_spec_changed_underneath_is_409_and_the_other_writer_wins(
    api: Api, interloper: Interloper, method: str, body: dict[str, Any]
) -> None:
    name = contested(api, f"contested-{method.lower()}")
    marker = f"{method.lower()}-under-a-spec-write"
    interloper.arm(marker, writer(api, name, {"spec": {"payload": {"by": "another writer"}}}))
    answer = api.call(method, f"/api/v1/tasks/{name}", {**body, "description": marker})
    assert answer.status == 409, answer.body
    assert "changed while it was being updated" in answer.body["error"]
    assert interloper.seen.count(marker) == 1, "a spec moved underneath is not tried again"
    task = stored(api, name)
    assert task["spec"]["payload"] == {"by": "another writer"}
    assert (task["metadata"].get("annotations") or {}).get(DESCRIPTION) != marker


def test_a_status_written_underneath_is_tried_again(api: Api, interloper: Interloper) -> None:
    name = contested(api, "status-moved")
    marker = "patch-under-a-status-write"
    theirs = {"status": {"queued": 7}}
    interloper.arm(marker, writer(api, name, theirs, "--subresource=status"))
    answer = api.call("PATCH", f"/api/v1/tasks/{name}", {"description": marker})
    assert answer.status == 200, answer.body
    assert interloper.seen.count(marker) >= 2, "the first replace met the status write"
    assert stored(api, name)["metadata"]["annotations"][DESCRIPTION] == marker

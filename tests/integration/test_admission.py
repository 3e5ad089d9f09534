"""Invalid Tasks are refused at ``kubectl apply`` time, and survive as a condition if they slip in.

A real operator replica serves the validating webhook over TLS (its own CA, a certificate for
127.0.0.1) to a real kube-apiserver; the ValidatingWebhookConfiguration is registered here, the
way the Helm chart does it, scoped to the test's namespace and removed afterwards (it is
cluster-scoped). Everything goes through the real ``kubectl``.

What is proved:
- each invalid schedule or time zone is refused, by the CRD schema or by the webhook, with an
  error naming ``spec.schedule`` or ``spec.timeZone``; the webhook's message arrives verbatim;
  valid ones are accepted; nothing refused is stored;
- what the schema cannot bound (a payload nested deeper than the database holds) is refused by
  the webhook with the engine's own reader;
- a refused update leaves the stored Task untouched (resourceVersion and spec);
- the webhook never blocks a delete, a status write, or an edit that leaves a stored invalid
  schedule as it is;
- without the webhook, an invalid Task gets ``Ready=False``/``InvalidSchedule`` and a Warning
  event, while the operator keeps leading and mirroring the other Tasks.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import json
import re
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cadenza import cli
from cadenza.devenv.controlplane import ControlPlane, free_port
from cadenza.kube import admission
from tests.support import db, wait_for
from tests.support.operators import Replicas, replicas

pytestmark = [
    pytest.mark.controlplane,
    pytest.mark.mariadb,
    pytest.mark.usefixtures("crds"),
]

# Written out rather than taken from admission.PATH: the chart calls this literal path, and kopf
# allows any request sent to a path that names no handler.
WEBHOOK_PATH = "/validate/tasks"
API_VERSION = "cadenza.dev/v1alpha1"
DENIED = "denied the request"

Manifest = dict[str, Any]


# --- TLS material --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServingPki:
    ca_pem: bytes
    cert_file: Path
    key_file: Path


def issue_serving_pki(directory: Path) -> ServingPki:
    """A throw-away CA and a serving certificate for 127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cadenza-webhook-test-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cadenza-webhook")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return ServingPki(ca.public_bytes(serialization.Encoding.PEM), cert_file, key_file)


# --- manifests and kubectl -----------------------------------------------------------------------


def task(name: str, **spec: Any) -> Manifest:
    return {
        "apiVersion": API_VERSION,
        "kind": "Task",
        "metadata": {"name": name},
        "spec": {"schedule": "*/10 * * * * *", "executors": [{"name": "pool"}], **spec},
    }


def executor(name: str = "pool") -> Manifest:
    return {
        "apiVersion": API_VERSION,
        "kind": "Executor",
        "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"cadenza.dev/executor": name}}},
    }


def apply(
    cp: ControlPlane, namespace: str, manifest: Manifest, *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return cp.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=check)


def patch_spec(
    cp: ControlPlane, namespace: str, name: str, spec: Manifest, *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    patch = json.dumps({"spec": spec})
    return cp.kubectl(
        "patch",
        "tasks.cadenza.dev",
        name,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        patch,
        check=check,
    )


def get_task(cp: ControlPlane, namespace: str, name: str) -> Manifest:
    obj: Manifest = json.loads(
        cp.kubectl("get", "tasks.cadenza.dev", name, "-n", namespace, "-o", "json").stdout
    )
    return obj


def task_names(cp: ControlPlane, namespace: str) -> set[str]:
    out = cp.kubectl("get", "tasks.cadenza.dev", "-n", namespace, "-o", "name").stdout
    return {line.rsplit("/", 1)[-1] for line in out.split()}


def condition(cp: ControlPlane, namespace: str, name: str, kind: str) -> Manifest | None:
    conds = (get_task(cp, namespace, name).get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == kind), None)


def await_condition(
    cp: ControlPlane, namespace: str, name: str, kind: str, generation: int | None = None
) -> Manifest:
    """The Task's condition ``kind`` once the operator wrote it (for ``generation``, if given)."""

    def current() -> Manifest | None:
        found = condition(cp, namespace, name, kind)
        if found is None or generation not in (None, found.get("observedGeneration")):
            return None
        return found

    found = wait_for(current, 60, f"condition {kind} on Task {name}")
    assert found is not None
    return found


def await_warning_event(
    cp: ControlPlane, namespace: str, name: str, reason: str, saying: str
) -> Manifest:
    """A Warning event for the Task with this reason whose message contains ``saying`` (other
    events of the same reason may accompany it)."""

    def current() -> Manifest | None:
        out = cp.kubectl(
            "get",
            "events",
            "-n",
            namespace,
            "-o",
            "json",
            "--field-selector",
            f"involvedObject.name={name},reason={reason},type=Warning",
        )
        items: list[Manifest] = json.loads(out.stdout)["items"]
        return next((e for e in items if saying in e.get("message", "")), None)

    found = wait_for(current, 30, f"a Warning event {reason} for {name} saying {saying!r}")
    assert found is not None
    return found


def webhook_configuration(name: str, namespace: str, port: int, ca_pem: bytes) -> Manifest:
    """What the chart installs, pointed at a local replica, limited to one namespace, and also
    sent deletes and status writes, which the webhook must let through."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "tasks.validate.cadenza.dev",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
                "matchPolicy": "Equivalent",
                "rules": [
                    {
                        "apiGroups": ["cadenza.dev"],
                        "apiVersions": ["v1alpha1"],
                        "resources": ["tasks", "tasks/status"],
                        "operations": ["CREATE", "UPDATE", "DELETE"],
                        "scope": "Namespaced",
                    }
                ],
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "In",
                            "values": [namespace],
                        }
                    ]
                },
                "clientConfig": {
                    "url": f"https://127.0.0.1:{port}{WEBHOOK_PATH}",
                    "caBundle": base64.b64encode(ca_pem).decode("ascii"),
                },
            }
        ],
    }


# --- fixtures ------------------------------------------------------------------------------------


@dataclass
class WebhookReplica:
    group: Replicas
    port: int
    pki: ServingPki


@pytest.fixture
def serving(
    controlplane: ControlPlane, database: str, namespace: str, tmp_path: Path
) -> Iterator[WebhookReplica]:
    """One replica serving the webhook; no configuration registered yet."""
    pki = issue_serving_pki(tmp_path / "webhook-pki")
    port = free_port()
    env = {
        "CADENZA_WEBHOOK_HOST": "127.0.0.1",
        "CADENZA_WEBHOOK_PORT": str(port),
        "CADENZA_WEBHOOK_CERT_FILE": str(pki.cert_file),
        "CADENZA_WEBHOOK_KEY_FILE": str(pki.key_file),
    }
    with replicas(controlplane, database, namespace, tmp_path, count=1, extra_env=env) as group:
        group.wait_indexed()
        yield WebhookReplica(group, port, pki)


@contextlib.contextmanager
def registered(cp: ControlPlane, namespace: str, replica: WebhookReplica) -> Iterator[None]:
    """Register the webhook for ``namespace``; return once it refuses a probe; always remove it."""
    name = f"cadenza-test-{namespace}"
    manifest = webhook_configuration(name, namespace, replica.port, replica.pki.ca_pem)
    try:
        cp.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        # Registration reaches the API server's admission chain asynchronously. A server-side
        # dry run goes through admission but never stores the probe.
        probe = json.dumps(task(f"probe-{secrets.token_hex(3)}", schedule="61 * * * *"))

        def refused() -> bool:
            out = cp.kubectl(
                "create", "--dry-run=server", "-n", namespace, "-f", "-", input=probe, check=False
            )
            return out.returncode != 0 and DENIED in out.stderr

        try:
            wait_for(refused, 60, "the webhook to refuse a probe Task")
        except AssertionError:
            raise AssertionError(replica.group.report()) from None
        yield
    finally:
        cp.kubectl("delete", "validatingwebhookconfiguration", name, "--ignore-not-found")


@pytest.fixture
def webhook(
    controlplane: ControlPlane, namespace: str, serving: WebhookReplica
) -> Iterator[WebhookReplica]:
    with registered(controlplane, namespace, serving):
        yield serving


# --- the table -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Invalid:
    schedule: str
    time_zone: str
    field: str
    """``spec.schedule`` or ``spec.timeZone``: the path the error must name."""
    layer: str
    """``schema`` (the CRD's CEL rule refuses it first) or ``webhook``."""
    says: str
    """A fragment of the explanation the user must see."""


INVALID = [
    Invalid("61 * * * *", "UTC", "spec.schedule", "webhook", "minute value 61 out of range 0-59"),
    Invalid("* 24 * * *", "UTC", "spec.schedule", "webhook", "hour value 24 out of range 0-23"),
    Invalid("0 0 * 13 *", "UTC", "spec.schedule", "webhook", "month value 13 out of range 1-12"),
    Invalid("0 0 * * FUNDAY", "UTC", "spec.schedule", "webhook", 'day-of-week value "FUNDAY"'),
    Invalid("*/0 * * * *", "UTC", "spec.schedule", "webhook", "minute step 0 out of range"),
    Invalid("5-1 * * * *", "UTC", "spec.schedule", "webhook", "minute range 5-1 is backwards"),
    Invalid("0 0 30 2 *", "UTC", "spec.schedule", "webhook", "never occurs in FEB"),
    Invalid("0 0 L * *", "UTC", "spec.schedule", "webhook", 'day-of-month value "L"'),
    Invalid("* * * *", "UTC", "spec.schedule", "schema", "must be a 5-field cron expression"),
    Invalid("* * * * * * *", "UTC", "spec.schedule", "schema", "must be a 5-field cron"),
    Invalid("@every 0s", "UTC", "spec.schedule", "webhook", "shorter than the minimum interval"),
    Invalid("@every 500ms", "UTC", "spec.schedule", "webhook", "a unit below one second"),
    Invalid("@every 1.5s", "UTC", "spec.schedule", "webhook", "not a whole number of seconds"),
    Invalid("@every 2d", "UTC", "spec.schedule", "webhook", 'unknown unit "d"'),
    # Ticks centuries away overflowed the engine's datetimes: the longest interval is 366 days.
    Invalid("@every 8785h", "UTC", "spec.schedule", "webhook", "maximum interval of 8784h"),
    Invalid(
        "@every 9999999999999h", "UTC", "spec.schedule", "webhook", "maximum interval of 8784h"
    ),
    Invalid("@every", "UTC", "spec.schedule", "schema", "must be a 5-field cron expression"),
    Invalid("@fortnightly", "UTC", "spec.schedule", "schema", "a macro such as @hourly"),
    Invalid("TZ=Europe/Berlin 0 9 * * *", "UTC", "spec.schedule", "webhook", "embeds a time zone"),
    Invalid("@hourly", "Mars/Olympus", "spec.timeZone", "webhook", "not a known IANA time zone"),
    Invalid("@hourly", "Europe/Berln", "spec.timeZone", "webhook", 'did you mean "Europe/Berlin"'),
    Invalid("@hourly", "localtime", "spec.timeZone", "webhook", "not a known IANA time zone"),
    Invalid("@hourly", "../etc/passwd", "spec.timeZone", "schema", "must be an IANA time zone"),
    Invalid("@hourly", "Europe/Berlin ", "spec.timeZone", "schema", "must be an IANA time zone"),
]

VALID = [
    ("*/10 * * * * *", "UTC"),
    ("@hourly", "UTC"),
    ("@every 90s", "UTC"),
    ("@every 1h30m", "Europe/Berlin"),
    ("@every 8784h", "UTC"),
    ("0 9 * * 1-5", "America/New_York"),
    ("0 0 29 2 *", "Asia/Tokyo"),
]


def test_invalid_schedules_and_time_zones_are_refused_at_apply(
    controlplane: ControlPlane, namespace: str, webhook: WebhookReplica
) -> None:
    failures: list[str] = []
    for index, case in enumerate(INVALID):
        manifest = task(f"bad-{index}", schedule=case.schedule, timeZone=case.time_zone)
        out = apply(controlplane, namespace, manifest, check=False)
        where = f"{case.schedule!r} in {case.time_zone!r}"
        if out.returncode == 0:
            failures.append(f"{where}: accepted")
            continue
        stderr = out.stderr
        if case.field not in stderr or case.says not in stderr:
            failures.append(f"{where}: error does not name {case.field} / {case.says!r}: {stderr}")
        if case.layer == "webhook":
            # Verbatim: the exact text the webhook produced, within kubectl's own wording.
            expected = "; ".join(admission.task_problems(manifest))
            if not (DENIED in stderr and f"{DENIED}: {expected}" in stderr):
                failures.append(f"{where}: not the webhook's verbatim refusal: {stderr}")
        elif DENIED in stderr or "Invalid value" not in stderr:
            failures.append(f"{where}: expected the CRD schema to refuse it: {stderr}")
    assert not failures, "\n".join(failures)
    assert task_names(controlplane, namespace) == set(), "a refused Task was stored"

    for index, (expression, zone) in enumerate(VALID):
        apply(controlplane, namespace, task(f"good-{index}", schedule=expression, timeZone=zone))
    assert task_names(controlplane, namespace) == {f"good-{i}" for i in range(len(VALID))}


def nested(depth: int) -> Any:
    payload: Any = 1
    for _ in range(depth):
        payload = [payload]
    return payload


def test_a_payload_nested_deeper_than_the_database_holds_is_refused(
    controlplane: ControlPlane, namespace: str, webhook: WebhookReplica
) -> None:
    """The schema cannot bound a free-form payload; the engine's reader, run by the webhook, can.
    5,000 levels also checks the webhook parses what the API server stores (10,000 at most)."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(cli.RECURSION_LIMIT)  # this process writes the deep JSON too
    try:
        for depth in (21, 5000):
            manifest = task(f"deep-{depth}", payload=nested(depth))
            out = apply(controlplane, namespace, manifest, check=False)
            assert out.returncode != 0 and DENIED in out.stderr, out.stderr
            assert "spec.payload: nests more than 20 levels" in out.stderr, out.stderr
    finally:
        sys.setrecursionlimit(before)
    apply(controlplane, namespace, task("deep-20", payload=nested(20)))
    assert task_names(controlplane, namespace) == {"deep-20"}


def test_both_problems_are_reported_at_once(
    controlplane: ControlPlane, namespace: str, webhook: WebhookReplica
) -> None:
    out = apply(
        controlplane,
        namespace,
        task("twice", schedule="61 * * * *", timeZone="Mars/Olympus"),
        check=False,
    )
    assert out.returncode != 0
    assert re.search(
        r"spec\.schedule: .*minute value 61.*; spec\.timeZone: .*Mars/Olympus", out.stderr
    ), out.stderr


def test_a_refused_update_leaves_the_stored_task_unchanged(
    controlplane: ControlPlane, namespace: str, webhook: WebhookReplica
) -> None:
    apply(controlplane, namespace, task("stable", schedule="@hourly", timeZone="Europe/Berlin"))
    # The leader's status write would move resourceVersion; take the snapshot after it.
    await_condition(controlplane, namespace, "stable", "Ready")
    before = get_task(controlplane, namespace, "stable")

    attempts = [
        apply(
            controlplane,
            namespace,
            task("stable", schedule="0 0 30 2 *", timeZone="Europe/Berlin"),
            check=False,
        ),
        apply(
            controlplane,
            namespace,
            task("stable", schedule="@hourly", timeZone="Mars/Olympus"),
            check=False,
        ),
        patch_spec(controlplane, namespace, "stable", {"schedule": "@every 500ms"}, check=False),
    ]
    for out, field in zip(
        attempts, ["spec.schedule", "spec.timeZone", "spec.schedule"], strict=True
    ):
        assert out.returncode != 0 and DENIED in out.stderr and field in out.stderr, out.stderr

    after = get_task(controlplane, namespace, "stable")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"]

    apply(controlplane, namespace, task("stable", schedule="@daily", timeZone="Europe/Berlin"))
    assert get_task(controlplane, namespace, "stable")["spec"]["schedule"] == "@daily"


def test_a_stored_invalid_task_can_still_be_edited_reported_and_deleted(
    controlplane: ControlPlane, namespace: str, serving: WebhookReplica
) -> None:
    """Written before the webhook existed; afterwards only a change of the bad field is refused.
    The configuration also routes deletes and status writes to the webhook: both pass."""
    apply(controlplane, namespace, executor())
    apply(controlplane, namespace, task("slipped", schedule="61 * * * *"))
    with registered(controlplane, namespace, serving):
        controlplane.kubectl("label", "tasks.cadenza.dev", "slipped", "-n", namespace, "team=a")
        patch_spec(controlplane, namespace, "slipped", {"suspend": True})
        generation = get_task(controlplane, namespace, "slipped")["metadata"]["generation"]
        assert generation == 2

        # The leader reports the new generation through the status subresource, which the
        # configuration also sends to the webhook.
        serving.group.wait_for_leader()
        ready = await_condition(controlplane, namespace, "slipped", "Ready", generation)
        assert (ready["status"], ready["reason"]) == ("False", "InvalidSchedule")

        out = patch_spec(
            controlplane, namespace, "slipped", {"schedule": "62 * * * *"}, check=False
        )
        assert out.returncode != 0 and DENIED in out.stderr and "spec.schedule" in out.stderr

        controlplane.kubectl("delete", "tasks.cadenza.dev", "slipped", "-n", namespace)
        assert "slipped" not in task_names(controlplane, namespace)


# --- without the webhook -------------------------------------------------------------------------


def _epoch(database_url: str, namespace: str) -> int:
    rows = db.rows(
        database_url,
        "SELECT epoch FROM leader_epochs WHERE lock_name = %s",
        f"cadenza.test.{namespace}",
    )
    return int(rows[0][0]) if rows else 0


def test_an_invalid_task_that_slipped_through_gets_a_condition_not_a_crash(
    controlplane: ControlPlane, database: str, namespace: str, tmp_path: Path
) -> None:
    with replicas(controlplane, database, namespace, tmp_path, count=1) as group:
        group.wait_indexed()
        leader = group.wait_for_leader()
        epoch = _epoch(database, namespace)
        apply(controlplane, namespace, executor())

        # The CRD's CEL rule checks the shape only: without the webhook these are stored.
        apply(controlplane, namespace, task("bad-minute", schedule="61 * * * *"))
        apply(
            controlplane, namespace, task("bad-zone", schedule="@hourly", timeZone="Mars/Olympus")
        )

        for name, field, value in [
            ("bad-minute", "schedule", '"61 * * * *"'),
            ("bad-zone", "timeZone", '"Mars/Olympus"'),
        ]:
            ready = await_condition(controlplane, namespace, name, "Ready")
            assert (ready["status"], ready["reason"]) == ("False", "InvalidSchedule"), ready
            assert field in ready["message"] and value in ready["message"], ready
            available = condition(controlplane, namespace, name, "ExecutorAvailable")
            assert available is not None and available["status"] == "True", available
            event = await_warning_event(controlplane, namespace, name, "InvalidSchedule", value)
            assert event["involvedObject"]["kind"] == "Task", event

        # Still alive, still leading under the same epoch (no failure made it step down), and
        # still mirroring Tasks created afterwards.
        apply(controlplane, namespace, task("good-after", schedule="@every 90s"))
        ready = await_condition(controlplane, namespace, "good-after", "Ready")
        assert (ready["status"], ready["reason"]) == ("True", "Valid"), ready
        rows = {
            str(r[0]): (bool(r[1]), r[2])
            for r in db.rows(database, "SELECT name, valid, invalid_reason FROM tasks")
        }
        assert rows["good-after"] == (True, None)
        assert rows["bad-minute"][0] is False and "61" in rows["bad-minute"][1]
        assert rows["bad-zone"][0] is False and "Mars/Olympus" in rows["bad-zone"][1]
        assert leader.alive()
        with urllib.request.urlopen(f"{leader.url}/readyz", timeout=5) as response:
            assert response.status == 200
        assert leader.readyz() == {
            "instance": leader.instance_id,
            "indexed": True,
            "leading": True,
            "epoch": epoch,
        }
        assert _epoch(database, namespace) == epoch

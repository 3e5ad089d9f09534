"""The Helm chart, with the real helm against a real kube-apiserver.

What the chart promises: it lints (also with ``--strict``); it renders for the default values and
for ``watchNamespaces`` mode; the values schema refuses a mistyped value with a message naming it;
its CRDs are byte-for-byte copies of ``crds/``; it installs and creates the operator's objects;
and its RBAC grants the operator exactly what it uses. The last one is proven twice with a token
minted for the chart's ServiceAccount: ``kubectl auth can-i`` over a matrix of must and must-not,
then the real calls the operator makes, including kopf running the operator's own handler
registry until its indexes hold the test's objects. Any 403 fails.

Installs use ``--skip-crds``: the session's ``crds`` fixture owns the CRDs, which Helm would
neither upgrade nor delete anyway.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import secrets
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kopf
import kubernetes
import pytest
import yaml
from cryptography import x509

from cadenza.devenv.controlplane import ControlPlane, kubeconfig_yaml
from cadenza.kube import admission, reviews, token_secrets
from cadenza.kube import executors as kube_executors
from cadenza.kube import tasks as kube_tasks
from cadenza.kube.handlers import build_registry
from cadenza.kube.hub import Hub
from cadenza.settings import Settings
from tests.support import wait_for

pytestmark = pytest.mark.controlplane

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "cadenza"
RELEASE = "cadenza"  # the fullname, ServiceAccount and Service are then all "cadenza"
GROUP, VERSION = "cadenza.dev", "v1alpha1"

Manifest = dict[str, Any]


# --- helm --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Helm:
    """The built helm with config and cache homes of its own; ``cluster_helm`` adds a cluster."""

    binary: Path
    env: dict[str, str]
    kube_version: str

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}")
        return proc

    def template(self, *values: str, namespace: str = "ops", check: bool = True) -> Any:
        """``helm template`` with ``--set`` values: the parsed documents, or the failed process."""
        args = ["template", RELEASE, str(CHART), "-n", namespace]
        # Offline rendering cannot ask a server, and the source-built helm's default (1.20) is
        # below the chart's kubeVersion: render for the control plane's version.
        args += ["--kube-version", self.kube_version]
        for value in values:
            args += ["--set", value]
        proc = self(*args, check=check)
        if proc.returncode != 0:
            return proc
        return Rendered([d for d in yaml.safe_load_all(proc.stdout) if d])


@pytest.fixture
def helm(controlplane_bin: Path, tmp_path: Path) -> Helm:
    env = {
        "PATH": f"{controlplane_bin}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "HELM_CACHE_HOME": str(tmp_path / "helm-cache"),
        "HELM_CONFIG_HOME": str(tmp_path / "helm-config"),
        "HELM_DATA_HOME": str(tmp_path / "helm-data"),
    }
    client = subprocess.run(
        [str(controlplane_bin / "kubectl"), "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    version = json.loads(client.stdout)["clientVersion"]["gitVersion"]
    return Helm(controlplane_bin / "helm", env, version)


@pytest.fixture
def cluster_helm(helm: Helm, controlplane: ControlPlane) -> Helm:
    """helm pointed at the running control plane."""
    return dataclasses.replace(helm, env={**helm.env, "KUBECONFIG": str(controlplane.kubeconfig)})


class Rendered(list[Manifest]):
    """The documents of one render, looked up by kind (and name)."""

    def of_kind(self, kind: str) -> list[Manifest]:
        return [d for d in self if d["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> Manifest:
        found = [d for d in self.of_kind(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
        return found[0]


def container_env(deployment: Manifest) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# --- files and offline rendering -----------------------------------------------------------------


def test_chart_crds_are_byte_copies_of_the_repository_crds() -> None:
    repo = {p.name: p.read_bytes() for p in (REPO_ROOT / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").iterdir()}
    assert sorted(chart) == sorted(repo), "charts/cadenza/crds/ must hold exactly crds/*.yaml"
    drifted = [name for name in repo if chart[name] != repo[name]]
    assert not drifted, f"charts/cadenza/crds/ drifted from crds/ ({drifted}): cp crds/*.yaml there"


@pytest.mark.parametrize("values", [[], ["watchNamespaces={team-a,team-b}"]], ids=["all", "ns"])
def test_lint_passes_also_strict(helm: Helm, values: list[str]) -> None:
    sets = [arg for v in values for arg in ("--set", v)]
    for strict in ([], ["--strict"]):
        out = helm("lint", str(CHART), *strict, *sets, check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "0 chart(s) failed" in out.stdout


def test_default_render_runs_two_hardened_replicas_cluster_wide(helm: Helm) -> None:
    docs = helm.template()
    deployment = docs.one("Deployment", RELEASE)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["replicas"] == 2
    assert pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert pod["serviceAccountName"] == RELEASE
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["resources"]["requests"] and container["resources"]["limits"]

    env = container_env(deployment)
    assert env["CADENZA_INSTANCE_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["CADENZA_DATABASE_URL"] == {
        "secretKeyRef": {"name": "cadenza-database", "key": "url"}
    }
    assert env["CADENZA_HTTP_ADVERTISE_URL"] == "http://cadenza.ops.svc:8080"
    assert env["CADENZA_NAMESPACES"] == ""
    assert env["CADENZA_MIGRATIONS_DIR"] == "/app/sql"
    assert pod["terminationGracePeriodSeconds"] > int(env["CADENZA_LEASE_SECONDS"])

    service = docs.one("Service", RELEASE)
    assert {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"} in service[
        "spec"
    ]["ports"]
    assert docs.one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert docs.one("Secret", "cadenza-database")["stringData"]["url"].startswith(
        "mysql+pymysql://"
    )
    assert docs.one("ClusterRoleBinding")["subjects"] == [
        {"kind": "ServiceAccount", "name": RELEASE, "namespace": "ops"}
    ]
    assert not docs.of_kind("Role") and not docs.of_kind("RoleBinding")
    assert_least_privilege_shape(docs)


def test_namespaced_render_confines_the_operator_to_the_listed_namespaces(helm: Helm) -> None:
    docs = helm.template("watchNamespaces={team-a,team-b}")
    assert container_env(docs.one("Deployment"))["CADENZA_NAMESPACES"] == "team-a,team-b"
    assert sorted(r["metadata"]["namespace"] for r in docs.of_kind("Role")) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in docs.of_kind("RoleBinding")) == [
        "team-a",
        "team-b",
    ]
    cluster_resources = {r for rule in docs.one("ClusterRole")["rules"] for r in rule["resources"]}
    assert cluster_resources == {
        "customresourcedefinitions",
        "tokenreviews",
        "subjectaccessreviews",
        "namespaces",
    }
    (hook,) = docs.one("ValidatingWebhookConfiguration")["webhooks"]
    assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == ["team-a", "team-b"]
    assert_least_privilege_shape(docs)


def test_rendered_environment_is_what_the_operator_reads(helm: Helm, tmp_path: Path) -> None:
    docs = helm.template("watchNamespaces={team-a,team-b}", "operator.leaseSeconds=20")
    env = {k: v for k, v in container_env(docs.one("Deployment")).items() if isinstance(v, str)}
    # The mounted Secret and the downward API, as the kubelet would provide them.
    tls = docs.one("Secret", "cadenza-webhook-tls")["data"]
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).write_bytes(base64.b64decode(tls[name]))
    env["CADENZA_WEBHOOK_CERT_FILE"] = str(tmp_path / "tls.crt")
    env["CADENZA_WEBHOOK_KEY_FILE"] = str(tmp_path / "tls.key")
    env["CADENZA_INSTANCE_ID"] = "cadenza-0"
    settings = Settings.from_env(env)
    assert settings.kube.namespaces == ("team-a", "team-b")
    assert settings.leadership.lease_seconds == 20
    assert settings.http.port == 8080
    assert settings.http.advertise_url == "http://cadenza.ops.svc:8080"
    assert settings.webhook.enabled and settings.webhook.port == 9443
    assert settings.database.migrations_dir == Path("/app/sql")


def assert_least_privilege_shape(docs: Rendered) -> None:
    """No aggregation, no wildcard, no delete but the REST API's of a Task or an Executor: the
    rules are the whole story."""
    for role in docs.of_kind("ClusterRole") + docs.of_kind("Role"):
        assert "aggregationRule" not in role
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"wildcard in {role['metadata']['name']}: {rule}"
            assert not {"deletecollection", "escalate", "bind"} & set(rule["verbs"])
            if "delete" in rule["verbs"]:
                assert rule["apiGroups"] == ["cadenza.dev"]
                assert rule["resources"] in (["tasks"], ["executors"])


def test_generated_webhook_certificate_is_trusted_by_the_configured_ca_bundle(helm: Helm) -> None:
    docs = helm.template()
    secret = docs.one("Secret", "cadenza-webhook-tls")
    (hook,) = docs.one("ValidatingWebhookConfiguration")["webhooks"]
    assert hook["failurePolicy"] == "Fail"
    assert hook["clientConfig"]["service"] == {
        "name": RELEASE,
        "namespace": "ops",
        "path": "/validate/tasks",
        "port": 443,
    }
    assert hook["clientConfig"]["service"]["path"] == admission.PATH  # what the operator serves
    assert hook["rules"][0]["resources"] == ["tasks"]
    assert hook["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    ca = x509.load_pem_x509_certificate(base64.b64decode(hook["clientConfig"]["caBundle"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "cadenza.ops.svc" in names.get_values_for_type(x509.DNSName)
    deployment = docs.one("Deployment")
    env = container_env(deployment)
    assert env["CADENZA_WEBHOOK_ENABLED"] == "true"
    assert env["CADENZA_WEBHOOK_CERT_FILE"] == "/etc/cadenza/webhook-tls/tls.crt"
    assert env["CADENZA_WEBHOOK_KEY_FILE"] == "/etc/cadenza/webhook-tls/tls.key"
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "webhook-tls", "secret": {"secretName": "cadenza-webhook-tls"}} in volumes


def test_webhook_tls_can_come_from_cert_manager_or_a_secret_or_be_left_out(helm: Helm) -> None:
    docs = helm.template("webhook.certManager.enabled=true")
    config = docs.one("ValidatingWebhookConfiguration")
    assert (
        config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == "ops/cadenza-webhook"
    )
    certificate = docs.one("Certificate", "cadenza-webhook")
    assert certificate["spec"]["secretName"] == "cadenza-webhook-tls"
    assert "cadenza.ops.svc" in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["issuerRef"]["name"] == docs.one("Issuer")["metadata"]["name"]

    docs = helm.template("webhook.tls.secretName=mine", "webhook.tls.caBundle=Q0E=")
    (hook,) = docs.one("ValidatingWebhookConfiguration")["webhooks"]
    assert hook["clientConfig"]["caBundle"] == "Q0E="
    assert not any(d["metadata"]["name"] == "cadenza-webhook-tls" for d in docs)
    volumes = docs.one("Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "webhook-tls", "secret": {"secretName": "mine"}} in volumes

    docs = helm.template("webhook.enabled=false")
    assert not docs.of_kind("ValidatingWebhookConfiguration")
    assert not any(d["metadata"]["name"] == "cadenza-webhook-tls" for d in docs)
    env = container_env(docs.one("Deployment"))
    assert env["CADENZA_WEBHOOK_ENABLED"] == "false"
    assert "CADENZA_WEBHOOK_CERT_FILE" not in env


def test_http_tls_and_the_dispatch_ca_come_from_secrets_and_probes_follow(helm: Helm) -> None:
    docs = helm.template("operator.tls.secretName=http-tls", "operator.dispatchCa.secretName=cas")
    spec = docs.one("Deployment")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = container_env(docs.one("Deployment"))
    assert env["CADENZA_HTTP_ADVERTISE_URL"] == "https://cadenza.ops.svc:8080"
    assert env["CADENZA_HTTP_TLS_CERT_FILE"] == "/etc/cadenza/http-tls/tls.crt"
    assert env["CADENZA_HTTP_TLS_KEY_FILE"] == "/etc/cadenza/http-tls/tls.key"
    assert env["CADENZA_DISPATCH_CA_FILE"] == "/etc/cadenza/dispatch-ca/ca.crt"
    assert {"name": "http-tls", "secret": {"secretName": "http-tls"}} in spec["volumes"]
    assert {"name": "dispatch-ca", "secret": {"secretName": "cas"}} in spec["volumes"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"

    env = container_env(helm.template().one("Deployment"))
    assert not {"CADENZA_HTTP_TLS_CERT_FILE", "CADENZA_DISPATCH_CA_FILE"} & env.keys()


def test_database_url_can_come_from_an_existing_secret(helm: Helm) -> None:
    docs = helm.template("database.existingSecret.name=dsn", "database.existingSecret.key=dsn")
    env = container_env(docs.one("Deployment"))
    assert env["CADENZA_DATABASE_URL"] == {"secretKeyRef": {"name": "dsn", "key": "dsn"}}
    assert not [d for d in docs.of_kind("Secret") if d["metadata"]["name"] == "cadenza-database"]


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("replicaCount=two", "/replicaCount"),
        ("updateStrategy.type=Sideways", "/updateStrategy/type"),
        ("service.port=-1", "/service/port"),
        ("operator.httpPort=70000", "/operator/httpPort"),
        ("webhook.failurePolicy=Maybe", "/webhook/failurePolicy"),
        ("operator.logLevel=LOUD", "/operator/logLevel"),
        ("watchNamespaces={Team_A}", "/watchNamespaces/0"),
        ("replicsCount=3", "replicsCount"),
    ],
)
def test_schema_refuses_a_bad_value_and_names_it(helm: Helm, value: str, named: str) -> None:
    rendered = helm.template(value, check=False)
    assert rendered.returncode != 0
    assert "schema" in rendered.stderr and named in rendered.stderr, rendered.stderr
    linted = helm("lint", str(CHART), "--set", value, check=False)
    assert linted.returncode != 0
    assert named in linted.stdout + linted.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["operator.leaseSeconds=30"], "must exceed operator.leaseSeconds"),
        (["database.url="], "set database.url"),
        (["webhook.tls.secretName=mine"], "webhook.tls.caBundle is required"),
        (["webhook.port=8080"], "must differ from operator.httpPort"),
    ],
)
def test_inconsistent_values_fail_with_the_fix(helm: Helm, values: list[str], message: str) -> None:
    rendered = helm.template(*values, check=False)
    assert rendered.returncode != 0
    assert message in rendered.stderr


# --- installing into the real API server ---------------------------------------------------------


@pytest.fixture
def make_namespace(controlplane: ControlPlane) -> Iterator[Callable[[], str]]:
    """Extra fresh namespaces (watched or deliberately not), deleted afterwards."""
    made: list[str] = []

    def make() -> str:
        name = f"t-{secrets.token_hex(4)}"
        controlplane.kubectl("create", "namespace", name)
        made.append(name)
        return name

    yield make
    for name in made:
        controlplane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@contextlib.contextmanager
def installed(helm: Helm, namespace: str, *values: str) -> Iterator[None]:
    """The chart installed as RELEASE into ``namespace``, uninstalled afterwards."""
    sets = [arg for v in values for arg in ("--set", v)]
    helm("install", RELEASE, str(CHART), "-n", namespace, "--skip-crds", *sets)
    try:
        yield
    finally:
        # Cluster-scoped objects (ClusterRole, webhook configuration) outlive the namespace.
        helm("uninstall", RELEASE, "-n", namespace, check=False)


def apply(cp: ControlPlane, namespace: str, *manifests: Manifest) -> None:
    doc = {"apiVersion": "v1", "kind": "List", "items": list(manifests)}
    cp.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))


def sample_objects() -> list[Manifest]:
    """What the operator reads in a watched namespace: a Task, its Executor, a pod (the
    Executor's dispatch-token Secret the operator makes itself)."""
    return [
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Executor",
            "metadata": {"name": "pool"},
            "spec": {"selector": {"matchLabels": {"cadenza.dev/executor": "pool"}}},
        },
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Task",
            "metadata": {"name": "sample"},
            "spec": {"schedule": "*/10 * * * * *", "executors": [{"name": "pool"}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "pool-0", "labels": {"cadenza.dev/executor": "pool"}},
            "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
        },
    ]


def test_install_creates_the_operator_objects(
    controlplane: ControlPlane, crds: None, namespace: str, cluster_helm: Helm
) -> None:
    with installed(cluster_helm, namespace, "webhook.enabled=false"):
        names = controlplane.kubectl(
            "get",
            "deployment,service,serviceaccount,poddisruptionbudget,secret,role,rolebinding",
            "-n",
            namespace,
            "-l",
            "app.kubernetes.io/instance=cadenza",
            "-o",
            "name",
        ).stdout.split()
        assert sorted(names) == [
            "deployment.apps/cadenza",
            "poddisruptionbudget.policy/cadenza",
            "secret/cadenza-database",
            "service/cadenza",
            "serviceaccount/cadenza",
        ]
        cluster = f"{namespace}-cadenza"
        controlplane.kubectl("get", "clusterrole", cluster, "-o", "name")
        controlplane.kubectl("get", "clusterrolebinding", cluster, "-o", "name")
        stored = json.loads(
            controlplane.kubectl("get", "deployment/cadenza", "-n", namespace, "-o", "json").stdout
        )
        assert stored["spec"]["replicas"] == 2
    gone = controlplane.kubectl("get", "clusterrole", cluster, "--ignore-not-found", "-o", "name")
    assert gone.stdout.strip() == "", "helm uninstall must remove the cluster-scoped RBAC"


# --- RBAC: the can-i matrix ---------------------------------------------------------------------

Grants = list[tuple[tuple[str, ...], str]]

# In every namespace the operator watches.
NAMESPACED_MUST: Grants = [
    (("get", "list", "watch", "create", "update", "patch", "delete"), "tasks.cadenza.dev"),
    (("get", "list", "watch", "create", "update", "delete"), "executors.cadenza.dev"),
    (("get", "patch", "update"), "tasks.cadenza.dev/status"),
    (("get", "patch", "update"), "executors.cadenza.dev/status"),
    (("get", "list", "watch"), "pods"),
    (("create", "patch"), "events"),
    (("create", "patch"), "events.events.k8s.io"),
    (("get", "create", "patch"), "secrets"),
]
NAMESPACED_MUST_NOT: Grants = [
    (("deletecollection", "trigger"), "tasks.cadenza.dev"),
    (("patch", "deletecollection"), "executors.cadenza.dev"),
    (("create", "patch", "delete"), "pods"),
    (("create",), "pods/exec"),
    (("list", "watch", "update", "delete"), "secrets"),
    (("get", "list", "create", "patch", "delete"), "deployments.apps"),
    (("get",), "configmaps"),
    (("delete",), "events"),
    (("create",), "leases.coordination.k8s.io"),
    (("create",), "serviceaccounts/token"),
    (("create",), "rolebindings.rbac.authorization.k8s.io"),
]
# The cluster-wide grant, sampled: what kopf lists across namespaces and what the leader writes.
ALL_NAMESPACES: Grants = [
    (("list", "watch"), "tasks.cadenza.dev"),
    (("list", "watch"), "executors.cadenza.dev"),
    (("list", "watch"), "pods"),
    (("patch",), "tasks.cadenza.dev/status"),
    (("get",), "secrets"),
    (("create",), "events"),
]
CLUSTER_MUST: Grants = [
    (("list", "watch"), "customresourcedefinitions.apiextensions.k8s.io"),
    (("create",), "tokenreviews.authentication.k8s.io"),
    (("create",), "subjectaccessreviews.authorization.k8s.io"),
]
CLUSTER_MUST_NOT: Grants = [
    (("get", "create", "delete"), "customresourcedefinitions.apiextensions.k8s.io"),
    (("get", "create", "delete"), "namespaces"),
    (("create",), "validatingwebhookconfigurations.admissionregistration.k8s.io"),
    (("list",), "nodes"),
    (("create",), "clusterrolebindings.rbac.authorization.k8s.io"),
    (("escalate", "bind"), "clusterroles.rbac.authorization.k8s.io"),
    (("impersonate",), "users"),
    (("impersonate",), "serviceaccounts"),
]
# kopf lists and watches Namespaces only when it watches a list of them (it then follows them).
KOPF_NAMESPACES: Grants = [(("list", "watch"), "namespaces")]


def can_i(cp: ControlPlane, user: str, verb: str, resource: str, scope: list[str]) -> bool:
    resource, _, sub = resource.partition("/")
    args = ["auth", "can-i", verb, resource, "--as", user, *scope]
    if sub:
        args.append(f"--subresource={sub}")
    out = cp.kubectl(*args, check=False)
    answer = out.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl {' '.join(args)}: {out.stderr}"
    return answer == "yes"


def assert_can_i(cp: ControlPlane, user: str, checks: list[tuple[Grants, list[str], bool]]) -> None:
    """Every (grants, kubectl scope, expected) answered as expected; all mismatches reported."""
    cases = [
        (verb, resource, scope, expected)
        for grants, scope, expected in checks
        for verbs, resource in grants
        for verb in verbs
    ]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda c: can_i(cp, user, c[0], c[1], c[2]), cases))
    wrong = [
        f"{'may not' if expected else 'may'} {verb} {resource} {' '.join(scope)}"
        for (verb, resource, scope, expected), answer in zip(cases, answers, strict=True)
        if answer != expected
    ]
    assert not wrong, f"{user} " + "; ".join(wrong)


# --- RBAC: the operator's calls with a real token -------------------------------------------------


def service_account_kubeconfig(cp: ControlPlane, namespace: str, path: Path) -> str:
    """Write a kubeconfig that logs in with a freshly minted ServiceAccount token; return it."""
    token = cp.kubectl("create", "token", RELEASE, "-n", namespace, "--duration=15m").stdout.strip()
    cluster = json.loads(cp.kubeconfig.read_text())["clusters"][0]["cluster"]
    path.write_text(
        kubeconfig_yaml(
            cluster["server"],
            Path(cluster["certificate-authority"]),
            user=f"system:serviceaccount:{namespace}:{RELEASE}",
            credentials={"token": token},
            namespace=namespace,
        )
    )
    return token


def forbidden(call: Callable[[], object]) -> bool:
    try:
        call()
    except kubernetes.client.ApiException as exc:
        if exc.status == 403:
            return True
        raise
    return False


def watch_opens(list_call: Callable[..., Any], *args: Any) -> None:
    """Open a watch (the server authorises it before the first byte) and close it again."""
    response = list_call(*args, watch=True, timeout_seconds=1, _preload_content=False)
    try:
        assert response.status == 200
    finally:
        response.close()


class OperatorCalls:
    """The calls the operator makes besides kopf's own, made as its ServiceAccount."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.api = api
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.core = kubernetes.client.CoreV1Api(api)
        self.events = kubernetes.client.EventsV1Api(api)
        self.extensions = kubernetes.client.ApiextensionsV1Api(api)

    def watches(self, watched: list[str]) -> None:
        """kopf's listings and watches, and the readiness check's listings."""
        self.extensions.list_custom_resource_definition()
        watch_opens(self.extensions.list_custom_resource_definition)
        if watched:
            self.core.list_namespace()
            watch_opens(self.core.list_namespace)
        else:
            for plural in ("tasks", "executors"):
                self.custom.list_cluster_custom_object(GROUP, VERSION, plural)
                watch_opens(self.custom.list_cluster_custom_object, GROUP, VERSION, plural)
            self.core.list_pod_for_all_namespaces()
            watch_opens(self.core.list_pod_for_all_namespaces)

    def namespaced(self, ns: str) -> None:
        custom = self.custom
        for plural in ("tasks", "executors"):
            custom.list_namespaced_custom_object(GROUP, VERSION, ns, plural)
            watch_opens(custom.list_namespaced_custom_object, GROUP, VERSION, ns, plural)
        self.core.list_namespaced_pod(ns)
        watch_opens(self.core.list_namespaced_pod, ns)
        self.core.read_namespaced_pod("pool-0", ns)
        # The Executor's dispatch-token Secret (cadenza.kube.token_secrets, the code the pool and
        # the registration run): made when missing, then read.
        pool = custom.get_namespaced_custom_object(GROUP, VERSION, ns, "executors", "pool")
        made = token_secrets.TokenSecrets(self.api).ensure(ns, "pool", pool["metadata"]["uid"])
        again = token_secrets.TokenSecrets(self.api).ensure(ns, "pool", pool["metadata"]["uid"])
        assert made == again and made["token"]

        # The leader's status writes, on both kinds.
        for plural, name, status in (
            ("tasks", "sample", {"consecutiveFailures": 0}),
            ("executors", "pool", {"totalPods": 1}),
        ):
            custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, ns, plural, name, {"status": status}
            )
            current = custom.get_namespaced_custom_object_status(GROUP, VERSION, ns, plural, name)
            custom.replace_namespaced_custom_object_status(
                GROUP, VERSION, ns, plural, name, current
            )

        # The REST API's own calls (cadenza.kube.tasks): create a Task from the original
        # system's JSON body, list, read, replace, trigger and delete it.
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Task",
            "metadata": {"name": "from-api"},
            "spec": {"schedule": "@hourly", "executors": [{"name": "pool"}]},
        }
        api_tasks = kube_tasks.Tasks(self.api)
        created = api_tasks.create(ns, body)
        created["spec"]["suspend"] = True
        api_tasks.replace(ns, "from-api", created)
        api_tasks.annotate(ns, "from-api", {"cadenza.dev/trigger": "1"})
        assert api_tasks.page(ns, label_selector="x!=y", limit=1).items
        assert api_tasks.get(ns, "from-api")["spec"]["suspend"] is True
        api_tasks.delete(ns, "from-api")

        # The REST API's registration (cadenza.kube.executors): an Executor with an endpoint,
        # its dispatch-token Secret, then deregistration.
        api_executors = kube_executors.Executors(self.api)
        outside = api_executors.create(
            ns,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Executor",
                "metadata": {"name": "outside"},
                "spec": {"endpoints": [{"instanceId": "x-1", "baseUrl": "http://127.0.0.9:9"}]},
            },
        )
        uid = outside["metadata"]["uid"]
        assert api_executors.token_secrets.ensure(ns, "outside", uid)["token"]
        outside["spec"]["heartbeatSeconds"] = 5
        api_executors.replace(ns, "outside", outside)
        assert [e["metadata"]["name"] for e in api_executors.list(ns)] == ["outside", "pool"]
        assert api_executors.get(ns, "outside")["spec"]["heartbeatSeconds"] == 5
        api_executors.delete(ns, "outside")

        self.post_events(
            ns, custom.get_namespaced_custom_object(GROUP, VERSION, ns, "tasks", "sample")
        )

    def post_events(self, ns: str, task: Manifest) -> None:
        """A Warning Event and its repeat, in the core and the events.k8s.io API."""
        involved = kubernetes.client.V1ObjectReference(
            api_version=f"{GROUP}/{VERSION}",
            kind="Task",
            name=task["metadata"]["name"],
            namespace=ns,
            uid=task["metadata"]["uid"],
        )
        meta = kubernetes.client.V1ObjectMeta(generate_name="sample-")
        old = self.core.create_namespaced_event(
            ns,
            kubernetes.client.CoreV1Event(
                metadata=meta,
                involved_object=involved,
                reason="RunFailed",
                message="probe",
                type="Warning",
                source=kubernetes.client.V1EventSource(component="cadenza"),
            ),
        )
        self.core.patch_namespaced_event(old.metadata.name, ns, {"count": 2})
        new = self.events.create_namespaced_event(
            ns,
            kubernetes.client.EventsV1Event(
                metadata=meta,
                event_time=dt.datetime.now(dt.UTC),
                regarding=involved,
                reason="RunFailed",
                note="probe",
                type="Warning",
                action="Dispatch",
                reporting_controller="cadenza.dev/operator",
                reporting_instance="test",
            ),
        )
        # A repeat updates the series (the note is immutable), as client-go's recorder does.
        series = {"count": 2, "lastObservedTime": dt.datetime.now(dt.UTC).isoformat()}
        self.events.patch_namespaced_event(new.metadata.name, ns, {"series": series})

    def reviews(self, token: str, ns: str) -> None:
        """The REST API authenticates a caller's token and authorises the caller's request
        (cadenza.kube.reviews, the code the API runs)."""
        api_reviews = reviews.Reviews(self.api)
        who = api_reviews.authenticate(token)
        assert who is not None and who.username.startswith("system:serviceaccount:")
        assert api_reviews.authenticate("not-a-token") is None
        assert api_reviews.allowed(who, reviews.Access("get", ns, "sample"))
        # The operator itself holds no custom verb: a caller's trigger grant is their own.
        assert not api_reviews.allowed(who, reviews.Access("trigger", ns, "sample"))

    def refused(self, ns: str) -> None:
        """What the operator must not do, refused by the server itself."""
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "intruder"},
            "spec": {"containers": [{"name": "x", "image": "x"}]},
        }
        custom = self.custom
        assert forbidden(
            lambda: custom.delete_collection_namespaced_custom_object(GROUP, VERSION, ns, "tasks")
        )
        assert forbidden(
            lambda: custom.delete_collection_namespaced_custom_object(
                GROUP, VERSION, ns, "executors"
            )
        )
        assert forbidden(
            lambda: custom.patch_namespaced_custom_object(
                GROUP, VERSION, ns, "executors", "pool", {"spec": {"port": 9191}}
            )
        )
        assert forbidden(lambda: self.core.create_namespaced_pod(ns, pod))
        assert forbidden(lambda: self.core.list_namespaced_secret(ns))


class KopfWarnings(logging.Handler):
    """Collects what kopf warns about, e.g. "Not enough permissions to watch for namespaces"."""

    # Expected: the test runs kopf in a thread, which cannot install signal handlers.
    EXPECTED = ("OS signals are ignored",)

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not message.startswith(self.EXPECTED):
            self.messages.append(message)


class KopfReplica:
    """kopf running the operator's own handler registry (cadenza.kube.handlers) in a thread."""

    def __init__(self, kubeconfig: Path, watched: list[str]) -> None:
        settings = Settings.from_env(
            {"KUBECONFIG": str(kubeconfig), "CADENZA_NAMESPACES": ",".join(watched)}
        )
        self.hub = Hub()
        self.registry = build_registry(settings, self.hub)
        self.watched = watched
        self.stop = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="kopf-as-operator", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=self.registry,
                    standalone=True,
                    clusterwide=not self.watched,
                    namespaces=self.watched,
                    stop_flag=self.stop,
                )
            )
        except BaseException as exc:  # surfaced by indexed()
            self.failure = exc

    def indexed(self, ns: str) -> bool:
        """Whether the indexes hold the sample Task, Executor and Pod of ``ns``."""
        assert self.failure is None, f"kopf stopped: {self.failure!r}"
        hub = self.hub
        return bool(hub.task(ns, "sample") and hub.executor(ns, "pool") and hub.pods(ns))

    def __enter__(self) -> KopfReplica:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "kopf did not stop within 30s"


@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced"])
def test_rbac_grants_the_operator_exactly_what_it_uses(
    controlplane: ControlPlane,
    crds: None,
    namespace: str,
    make_namespace: Callable[[], str],
    cluster_helm: Helm,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    watched = [make_namespace()] if mode == "namespaced" else []
    elsewhere = make_namespace()
    target = (watched or [elsewhere])[0]
    apply(controlplane, target, *sample_objects())
    if watched:  # the same objects where the operator must not look
        apply(controlplane, namespace, *sample_objects())
    values = ["webhook.enabled=false"]
    if watched:
        values.append(f"watchNamespaces={{{','.join(watched)}}}")
    user = f"system:serviceaccount:{namespace}:{RELEASE}"

    with installed(cluster_helm, namespace, *values):
        in_target, everywhere, cluster = ["-n", target], ["-A"], ["-n", "default"]
        checks = [
            (NAMESPACED_MUST, in_target, True),
            (NAMESPACED_MUST_NOT, in_target, False),
            (CLUSTER_MUST, cluster, True),
            (CLUSTER_MUST_NOT, cluster, False),
            (KOPF_NAMESPACES, cluster, bool(watched)),
            (ALL_NAMESPACES, everywhere, not watched),
        ]
        if watched:  # neither another namespace nor its own is the operator's business
            for other in (elsewhere, namespace):
                checks.append(([(("get", "list"), "tasks.cadenza.dev")], ["-n", other], False))
                checks.append(([(("get",), "secrets"), (("list",), "pods")], ["-n", other], False))
        assert_can_i(controlplane, user, checks)

        kubeconfig = tmp_path / "operator.kubeconfig"
        token = service_account_kubeconfig(controlplane, namespace, kubeconfig)
        with kubernetes.config.new_client_from_config(config_file=str(kubeconfig)) as api:
            calls = OperatorCalls(api)
            calls.watches(watched)
            calls.namespaced(target)
            calls.reviews(token, target)
            calls.refused(target)

        # kopf logs in by reading KUBECONFIG itself (kopf.login_with_kubeconfig).
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        warnings = KopfWarnings()
        logging.getLogger("kopf").addHandler(warnings)
        try:
            with KopfReplica(kubeconfig, watched) as replica:
                wait_for(lambda: replica.indexed(target), 30, f"kopf to index {target}")
                # What kopf says while it stops (e.g. "Unprocessed streams left") is not about
                # permissions: only what it warned while it started and indexed counts.
                logging.getLogger("kopf").removeHandler(warnings)
        finally:
            logging.getLogger("kopf").removeHandler(warnings)
        assert not warnings.messages, warnings.messages
        if watched:
            assert not replica.hub.task(namespace, "sample"), "indexed an unwatched namespace"


# --- the admission webhook -----------------------------------------------------------------------


def test_webhook_refuses_tasks_in_watched_namespaces_while_no_replica_answers(
    controlplane: ControlPlane,
    crds: None,
    namespace: str,
    make_namespace: Callable[[], str],
    cluster_helm: Helm,
) -> None:
    watched = make_namespace()
    task = sample_objects()[1]

    def webhook_config() -> Manifest:
        out = controlplane.kubectl(
            "get", "validatingwebhookconfiguration", f"{namespace}-cadenza", "-o", "json"
        )
        return dict(json.loads(out.stdout))

    with installed(cluster_helm, namespace, f"watchNamespaces={{{watched}}}"):
        refused = controlplane.kubectl(
            "create", "-n", watched, "-f", "-", input=json.dumps(task), check=False
        )
        assert refused.returncode != 0
        assert "tasks.validate.cadenza.dev" in refused.stderr, refused.stderr
        # Outside the watched namespaces the webhook is not consulted at all.
        controlplane.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(task))

        # The generated certificate survives an upgrade: lookup finds and reuses the Secret.
        before = webhook_config()["webhooks"][0]["clientConfig"]["caBundle"]
        cluster_helm(
            "upgrade", RELEASE, str(CHART), "-n", namespace, "--skip-crds", "--reuse-values"
        )
        assert webhook_config()["webhooks"][0]["clientConfig"]["caBundle"] == before
        secret = json.loads(
            controlplane.kubectl(
                "get", "secret", "cadenza-webhook-tls", "-n", namespace, "-o", "json"
            ).stdout
        )
        assert secret["data"]["ca.crt"] == before

"""The REST API on a real operator replica: kube-apiserver, MariaDB and the replica process.

One replica per test module (``api``), in a namespace and database of that module, leading so
that triggers are claimed. Callers are real ServiceAccounts with tokens minted by TokenRequest
(``kubectl create token``) and bound to Roles: ``callers.token(...)``.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cadenza.devenv import mariadb
from cadenza.devenv.controlplane import ControlPlane
from tests.support import db
from tests.support.operators import Replicas

ALL_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "trigger", "cancel")
EXECUTOR_VERBS = ("get", "list", "watch", "create", "update", "delete")


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class Api:
    """HTTP to the replica's REST API, with ``token`` as the default caller."""

    url: str
    namespace: str
    database_url: str
    plane: ControlPlane
    token: str = ""
    replicas: Replicas | None = field(default=None, repr=False)
    """The replica group serving it (its logs, for a failure report)."""

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Answer:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        bearer = self.token if token is None else token
        if bearer:
            request.add_header("Authorization", f"Bearer {bearer}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return _answer(resp.status, resp.read(), dict(resp.headers))
        except urllib.error.HTTPError as exc:
            return _answer(exc.code, exc.read(), dict(exc.headers))

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return self.plane.kubectl(*args, input=input).stdout

    def sql(self, query: str, *args: object) -> list[dict[str, Any]]:
        return db.records(self.database_url, query, *args)


def _answer(status: int, raw: bytes, headers: dict[str, str]) -> Answer:
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = raw.decode(errors="replace")
    return Answer(status, body, headers)


@dataclass
class Callers:
    """ServiceAccounts of the module's namespace, each with its own Role, and their tokens."""

    plane: ControlPlane
    namespace: str
    made: dict[str, str] = field(default_factory=dict)

    def token(
        self,
        name: str,
        verbs: tuple[str, ...],
        cluster_wide: bool = False,
        executor_verbs: tuple[str, ...] = (),
    ) -> str:
        """A token of the ServiceAccount ``name`` allowed ``verbs`` on tasks.cadenza.dev and
        ``executor_verbs`` on executors.cadenza.dev (in the namespace, or everywhere)."""
        if name in self.made:
            return self.made[name]
        role_kind = "ClusterRole" if cluster_wide else "Role"
        role_name = f"{self.namespace}-{name}" if cluster_wide else name
        objects: list[dict[str, Any]] = [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        ]
        rules = [
            {"apiGroups": ["cadenza.dev"], "resources": [resource], "verbs": list(granted)}
            for resource, granted in (("tasks", verbs), ("executors", executor_verbs))
            if granted
        ]
        if rules:
            objects += [
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": role_kind,
                    "metadata": {"name": role_name},
                    "rules": rules,
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": f"{role_kind}Binding",
                    "metadata": {"name": role_name},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": role_kind,
                        "name": role_name,
                    },
                    "subjects": [
                        {"kind": "ServiceAccount", "name": name, "namespace": self.namespace}
                    ],
                },
            ]
        doc = {"apiVersion": "v1", "kind": "List", "items": objects}
        self.plane.kubectl("apply", "-n", self.namespace, "-f", "-", input=json.dumps(doc))
        minted = self.plane.kubectl(
            "create", "token", name, "-n", self.namespace, "--duration=1h"
        ).stdout.strip()
        self.made[name] = minted
        return minted


@pytest.fixture(scope="module")
def module_namespace(controlplane: ControlPlane, crds: None) -> Iterator[str]:
    name = f"api-{secrets.token_hex(4)}"
    controlplane.kubectl("create", "namespace", name)
    yield name
    controlplane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def module_database(mariadb_server: mariadb.Server) -> Iterator[str]:
    with mariadb.scratch_database(mariadb_server) as name:
        yield mariadb_server.url(name)


@pytest.fixture(scope="module")
def callers(controlplane: ControlPlane, module_namespace: str) -> Iterator[Callers]:
    made = Callers(controlplane, module_namespace)
    yield made
    for name in made.made:  # ClusterRoles outlive the namespace
        controlplane.kubectl(
            "delete",
            "clusterrole,clusterrolebinding",
            f"{module_namespace}-{name}",
            "--ignore-not-found",
            check=False,
        )


@pytest.fixture(scope="module")
def api_env() -> dict[str, str]:
    """More environment for the module's replica; a module overrides it (the webhook's TLS)."""
    return {}


@pytest.fixture(scope="module")
def api(
    controlplane: ControlPlane,
    module_namespace: str,
    module_database: str,
    callers: Callers,
    api_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Api]:
    """A leading replica serving the API; its default caller may do everything on tasks."""
    workdir: Path = tmp_path_factory.mktemp("api")
    env = {
        "CADENZA_API_DEFAULT_NAMESPACE": module_namespace,
        "CADENZA_API_TRIGGER_WAIT_SECONDS": "20",
        "CADENZA_API_OPEN_METRICS": "false",
        **api_env,
    }
    group = Replicas(controlplane, module_database, module_namespace, workdir, extra_env=env)
    try:
        member = group.add()
        group.wait_indexed()
        group.wait_for_leader()
        admin = callers.token("admin", ALL_VERBS, cluster_wide=True, executor_verbs=EXECUTOR_VERBS)
        yield Api(member.url, module_namespace, module_database, controlplane, admin, group)
    finally:
        group.stop_all()

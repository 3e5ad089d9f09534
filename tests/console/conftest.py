"""The web console in a real browser: Debian's chromium driven by Playwright, against a real
operator replica (kube-apiserver, MariaDB, sidecar pods) whose Tasks fire while the page is open.

One stack per module: a leading replica, an Executor ``pool`` of two sidecar pods, the Tasks of
:data:`TASKS`, and callers minted by TokenRequest (``callers.token``) with Roles of their own. The
namespace, database and callers are those of ``tests/api/conftest.py`` (imported here, as the
CLI's are); the replica is a :func:`~tests.support.scenario.scenario`'s, for its pods and Tasks.
Chromium runs headless with the flags this machine's closed network needs (no background
connections) and a fresh profile; Playwright's own browser downloads are never used.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from cadenza.devenv.controlplane import ControlPlane
from tests.api import conftest as api_fixtures
from tests.api.conftest import ALL_VERBS, EXECUTOR_VERBS, Callers
from tests.support import db
from tests.support.scenario import Scenario, executor, scenario, task

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TASKS = [
    task("every-second", "* * * * * *", ["pool"]),
    task("every-ten", "*/10 * * * * *", ["pool"], timeZone="Europe/Berlin"),
    task("sleeper", "0 0 1 1 *", ["pool"], handler="sleep", payload={"seconds": 120}, suspend=True),
]
READ_REPLICAS = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRole",
    "rules": [{"nonResourceURLs": ["/api/v1/replicas"], "verbs": ["get"]}],
}

# The REST API's namespace, database and callers, one of each per module as there.
module_namespace = api_fixtures.module_namespace
module_database = api_fixtures.module_database
callers = api_fixtures.callers


@dataclass
class Stack:
    url: str
    """The replica's base URL; the console is at ``url + /console/``."""
    namespace: str
    database_url: str
    scene: Scenario
    tokens: dict[str, str] = field(default_factory=dict)

    def sql(self, query: str, *args: object) -> list[dict[str, Any]]:
        return db.records(self.database_url, query, *args)


@pytest.fixture(scope="module")
def stack(
    controlplane: ControlPlane,
    module_namespace: str,
    module_database: str,
    callers: Callers,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    namespace = module_namespace
    workdir: Path = tmp_path_factory.mktemp("console")
    env = {"CADENZA_API_DEFAULT_NAMESPACE": namespace, "CADENZA_API_OPEN_METRICS": "false"}
    with scenario(controlplane, module_database, namespace, workdir, **env) as s:
        s.replicas.wait_for_leader()
        s.add_pods("pool", 2)
        s.apply(executor("pool"), *TASKS)
        tokens = {
            "admin": callers.token(
                "admin", ALL_VERBS, cluster_wide=True, executor_verbs=EXECUTOR_VERBS
            ),
            "viewer": callers.token("viewer", ("get", "list", "watch")),
        }
        with _replicas_readable(controlplane, namespace, "admin"):
            member = s.replicas.members[0]
            yield Stack(member.url, namespace, module_database, s, tokens)


@contextlib.contextmanager
def _replicas_readable(plane: ControlPlane, namespace: str, account: str) -> Iterator[None]:
    """Let ``account`` read ``/api/v1/replicas``: a non-resource URL, so cluster-wide objects,
    which the namespace's deletion would leave behind and this deletes."""
    name = f"{namespace}-replicas"
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }
    role = {**READ_REPLICAS, "metadata": {"name": name}}
    doc = {"apiVersion": "v1", "kind": "List", "items": [role, binding]}
    try:
        plane.kubectl("apply", "-f", "-", input=json.dumps(doc))
        yield
    finally:
        plane.kubectl(
            "delete", "clusterrole,clusterrolebinding", name, "--ignore-not-found", check=False
        )


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    env = {**os.environ, "HOME": str(tmp_path_factory.mktemp("chromium-home"))}
    launched = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS, env=env
    )
    yield launched
    launched.close()


@dataclass
class Tab:
    """One browser tab on the console, with what the page reported: console errors (a script
    error, a request the CSP refused) fail the test that made them."""

    page: Page
    base: str
    errors: list[str] = field(default_factory=list)

    def open(self, route: str = "") -> None:
        self.page.goto(f"{self.base}/console/{route}")

    def sign_in(self, token: str) -> None:
        self.open()
        self.page.fill("#token", token)
        self.page.click("#sign-in-form button[type=submit]")


# Playwright's assertions wait 5 s by default, its actions 30 s: on a loaded 2-core machine a
# trigger's answer or a run's start can take longer than 5 s to show.
expect.set_options(timeout=30_000)


@pytest.fixture
def tab(browser: Browser, stack: Stack) -> Iterator[Tab]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(30_000)
    opened = Tab(page, stack.url)

    def record(message: ConsoleMessage) -> None:
        if message.type == "error":
            opened.errors.append(message.text)

    page.on("console", record)
    page.on("pageerror", lambda error: opened.errors.append(str(error)))
    yield opened
    context.close()
    unexpected = [e for e in opened.errors if "status of 403" not in e and "status of 401" not in e]
    assert not unexpected, f"the page reported errors: {unexpected}"

"""Fixtures of the end-to-end suite: a Cadenza installation that is already running, reached
only through ``--kubeconfig`` (kubectl) and, optionally, ``--e2e-api`` (HTTP).

Without ``--kubeconfig`` every test here is skipped, with the reason in the ``-ra`` summary. That
is not a hole in CI: ``tests/integration/test_e2e_kubeconfig.py`` starts the local demo and runs
this suite through the option, and ``scripts/kind-e2e`` runs it against a kind cluster.

- ``cluster`` (session): kubectl with that kubeconfig, in ``--e2e-namespace``; it first waits
  until ``--e2e-executor`` has a healthy pod, so a broken installation fails once, clearly.
- ``tasks``: creates uniquely named Tasks (``e2e-<hex>``) and deletes them after the test.
- ``clock`` (module): an every-second Task whose runs show that time passed with the scheduler
  alive, so "nothing fired" is asserted after the clock fired, never after a fixed sleep.
- ``api``: the REST API, or a skip naming ``--e2e-api`` when it was not given.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import EVERY_SECOND, Api, Clock, Cluster, Tasks
from tests.support import wait_for

SKIP_REASON = (
    "tests/e2e needs --kubeconfig of a running installation (scripts/kind-e2e; "
    "tests/integration/test_e2e_kubeconfig.py runs it against the local demo)"
)


def _kubectl(config: pytest.Config) -> str:
    chosen = config.getoption("e2e_kubectl") or shutil.which("kubectl")
    if chosen:
        return str(chosen)
    from cadenza.devenv import controlplane

    return str(controlplane.build_binaries() / "kubectl")


@pytest.fixture(scope="session")
def cluster(pytestconfig: pytest.Config) -> Cluster:
    kubeconfig = pytestconfig.getoption("kubeconfig")
    if not kubeconfig:
        pytest.skip(SKIP_REASON)
    path = Path(kubeconfig)
    if not path.is_file():
        pytest.fail(f"--kubeconfig {kubeconfig}: no such file", pytrace=False)
    found = Cluster(
        kubectl_bin=_kubectl(pytestconfig),
        kubeconfig=path,
        namespace=pytestconfig.getoption("e2e_namespace"),
        executor=pytestconfig.getoption("e2e_executor"),
        timeout=pytestconfig.getoption("e2e_timeout"),
    )

    def healthy_pods() -> int:
        executor = found.get("executors.cadenza.dev", found.executor)
        return int(((executor or {}).get("status") or {}).get("healthyPods") or 0)

    wait_for(
        healthy_pods,
        found.timeout,
        f"Executor {found.namespace}/{found.executor} (--e2e-executor) to have a healthy pod",
    )
    return found


@pytest.fixture
def tasks(cluster: Cluster) -> Iterator[Tasks]:
    made = Tasks(cluster)
    yield made
    made.delete_all()


@pytest.fixture(scope="module")
def clock(cluster: Cluster) -> Iterator[Clock]:
    made = Tasks(cluster)
    name = made.create(EVERY_SECOND)
    ticking = Clock(cluster, name)
    ticking.advance(1)
    yield ticking
    made.delete_all()


@pytest.fixture
def api(pytestconfig: pytest.Config, cluster: Cluster) -> Api:
    url, token = pytestconfig.getoption("e2e_api"), pytestconfig.getoption("e2e_token")
    if not url:
        pytest.skip("the REST API test needs --e2e-api URL (and --e2e-token)")
    if not token:
        pytest.fail("--e2e-api needs --e2e-token", pytrace=False)
    return Api(url, token)

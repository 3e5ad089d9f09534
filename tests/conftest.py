"""Fixtures for the real components every integration test runs against.

- ``controlplane`` (session): a real etcd + kube-apiserver built from Go modules.
- ``crds`` (session): Cadenza's CRDs installed and Established.
- ``namespace``: a fresh namespace per test.
- ``mariadb`` (session) / ``database``: the real MariaDB server and an empty database per test,
  dropped afterwards; ``engine``: a pool on that database, migrated, that must not leak.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy.engine import Engine

from cadenza.devenv import controlplane as cp
from cadenza.devenv import mariadb
from cadenza.store import engine as store_engine
from cadenza.store import migrations
from tests.e2e import options as e2e_options
from tests.support import wait_for

REPO = Path(__file__).resolve().parents[1]

# Property tests run in seconds on a shared 2-core machine: modest example counts, and no
# per-example deadline (a loaded machine would make one flaky). `--hypothesis-profile=thorough`
# for a long run.
settings.register_profile(
    "cadenza", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile("cadenza")


def pytest_addoption(parser: pytest.Parser) -> None:
    e2e_options.register(parser)


@pytest.fixture(scope="session")
def controlplane_bin() -> Path:
    return cp.build_binaries()


@pytest.fixture(scope="session")
def controlplane(controlplane_bin: Path) -> Iterator[cp.ControlPlane]:
    with cp.running(controlplane_bin) as plane:
        yield plane


def crd_established(plane: cp.ControlPlane, name: str) -> bool:
    out = plane.kubectl("get", "crd", name, "-o", "json", check=False)
    if out.returncode != 0:
        return False
    # A CRD just created may show "conditions": null for a moment.
    conditions = (json.loads(out.stdout).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


@pytest.fixture(scope="session")
def crds(controlplane: cp.ControlPlane) -> None:
    controlplane.kubectl("apply", "-f", str(REPO / "crds"))
    for name in ("tasks.cadenza.dev", "executors.cadenza.dev"):
        wait_for(lambda n=name: crd_established(controlplane, n), 30, f"CRD {name} Established")


@pytest.fixture
def namespace(controlplane: cp.ControlPlane) -> Iterator[str]:
    name = f"t-{secrets.token_hex(4)}"
    controlplane.kubectl("create", "namespace", name)
    yield name
    # Without a namespace controller the namespace stays Terminating; its name is never reused.
    controlplane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def mariadb_server() -> mariadb.Server:
    server = mariadb.Server()
    server.check()
    return server


@pytest.fixture
def database(mariadb_server: mariadb.Server) -> Iterator[str]:
    """The SQLAlchemy URL of a fresh, empty database that is dropped after the test."""
    with mariadb.scratch_database(mariadb_server) as name:
        yield mariadb_server.url(name)


@pytest.fixture
def engine(database: str) -> Iterator[Engine]:
    """A pool on the test's database with every migration applied; fails a test that leaks a
    pooled connection."""
    eng = store_engine.create_engine(database, pool_size=4)
    migrations.migrate(eng)
    yield eng
    assert eng.pool.checkedout() == 0, "a test leaked a pooled connection"  # type: ignore[attr-defined]
    eng.dispose()

"""The whole system for one scenario test: ``scene`` is a Scenario with one operator replica
(tests that need other tuning or more replicas define their own)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cadenza.devenv.controlplane import ControlPlane
from tests.support.scenario import Scenario, scenario


@pytest.fixture
def scene(
    controlplane: ControlPlane, database: str, namespace: str, tmp_path: Path, crds: None
) -> Iterator[Scenario]:
    with scenario(controlplane, database, namespace, tmp_path) as s:
        yield s

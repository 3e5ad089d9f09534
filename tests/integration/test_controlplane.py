"""The local control plane the whole suite stands on: it serves, and it cleans up after itself."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cadenza.devenv import controlplane as cp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes; its parent reaps it.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_serves_the_built_version_and_leaves_nothing_behind(controlplane_bin: Path) -> None:
    plane = cp.ControlPlane.start(controlplane_bin)
    try:
        version = json.loads(plane.kubectl("version", "-o", "json").stdout)
        assert version["serverVersion"]["gitVersion"] == "v1.37.2"
        assert version["clientVersion"]["gitVersion"] == "v1.37.2"
        plane.kubectl("create", "namespace", "probe")
        pids, workdir = plane.pids(), plane.workdir
        assert all(_alive(pid) for pid in pids)
    finally:
        plane.stop()
    assert not any(_alive(pid) for pid in pids)
    assert not workdir.exists()
    plane.stop()  # idempotent


def test_rbac_is_enforced(controlplane: cp.ControlPlane, namespace: str) -> None:
    out = controlplane.kubectl(
        "auth",
        "can-i",
        "list",
        "pods",
        "-n",
        namespace,
        "--as",
        "system:serviceaccount:nobody:nobody",
        check=False,
    )
    assert out.stdout.strip() == "no"

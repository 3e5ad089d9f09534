"""The end-to-end suite's ``--kubeconfig`` option, proven against the local demo.

``scripts/kind-e2e`` needs Docker; this test does not. It starts the demo (a real control plane,
two operator replicas, three executor pods of ``demo-executor``) in a temporary state directory,
with a database and pod addresses of its own so that neither a developer's demo nor another test
session is disturbed, runs ``pytest tests/e2e --kubeconfig <state>/kubeconfig ...`` as a child
process, and checks that every e2e test ran and passed (none skipped). The demo is stopped and its
database dropped whatever happens; its children die with it (``PR_SET_PDEATHSIG``) even if it has
to be killed.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cadenza.devenv import mariadb
from cadenza.devenv.pods import loopback_ip
from tests.support import wait_for
from tests.support.scenario import bindable

pytestmark = [pytest.mark.controlplane, pytest.mark.mariadb]

REPO = Path(__file__).resolve().parents[2]
EXECUTOR_PODS = 3
EXPECTED_TESTS = 10
"""tests/e2e's test count: update it with the suite, so that a test lost from collection fails."""


@dataclass(frozen=True)
class Demo:
    state: Path
    log: Path

    def env(self) -> dict[str, str]:
        """The demo's ``env`` file (``export NAME=value`` lines) as a mapping."""
        lines = (self.state / "env").read_text().splitlines()
        pairs = (line.removeprefix("export ").split("=", 1) for line in lines)
        return {name: value for name, value in pairs}


def free_pod_network() -> str:
    """A 127.x.y block none of whose demo pod addresses is taken (127.0.0.x is the developer's
    demo's and the sidecar tests')."""
    for _ in range(50):
        network = f"127.{random.randrange(16, 250)}.{random.randrange(256)}"
        if all(bindable(loopback_ip(i, network)) for i in range(EXECUTOR_PODS)):
            return network
    raise RuntimeError("no free 127.x.y block for the demo's pods")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the demo stops everything in order), SIGKILL if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def demo(
    controlplane_bin: Path, mariadb_server: mariadb.Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Demo]:
    tmp_path = tmp_path_factory.mktemp("demo")
    state, log = tmp_path / "demo", tmp_path / "demo.log"
    with mariadb.scratch_database(mariadb_server, prefix="cadenza_e2e") as database:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable, "-m", "cadenza.devenv.demo", "--state-dir", str(state),
                    "--database", database, "--pod-network", free_pod_network(),
                    "--executor-pods", str(EXECUTOR_PODS),
                ],
                cwd=tmp_path,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        try:

            def ready() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"the demo exited early:\n{log.read_text()[-3000:]}")
                return (state / "ready").exists()

            wait_for(ready, 150, "the demo's ready file")
            yield Demo(state, log)
        finally:
            _stop(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]


@pytest.mark.timeout(420)
def test_the_e2e_suite_passes_against_the_demo_through_its_kubeconfig(
    demo: Demo, controlplane_bin: Path, tmp_path: Path
) -> None:
    env = demo.env()
    report = tmp_path / "e2e.xml"
    run = subprocess.run(
        [
            sys.executable, "-m", "pytest", "tests/e2e", "-p", "no:cacheprovider", "-q",
            "--kubeconfig", env["KUBECONFIG"],
            "--e2e-namespace", "default",
            "--e2e-executor", "demo-executor",
            "--e2e-kubectl", str(controlplane_bin / "kubectl"),
            "--e2e-api", env["CADENZA_API"],
            "--e2e-token", env["CADENZA_TOKEN"],
            "--junit-xml", str(report),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=360,
        check=False,
    )  # fmt: skip
    output = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, output
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None, output
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    assert counts == {"tests": EXPECTED_TESTS, "failures": 0, "errors": 0, "skipped": 0}, output


def test_the_cadenza_command_finds_the_demo_through_its_kubeconfig_alone(demo: Demo) -> None:
    """What the README's tour does after ``source .cadenza-demo/env``, with nothing but the
    kubeconfig to find the API and a token: its context's ``cadenza.dev/api`` extension."""
    env = demo.env()
    bare = {k: v for k, v in os.environ.items() if not k.startswith("CADENZA_")}
    bare.update(KUBECONFIG=env["KUBECONFIG"], PATH=env["PATH"].replace("$PATH", bare["PATH"]))
    for command in (["cadenza", "tasks", "list"], ["kubectl", "cadenza", "replicas"]):
        run = subprocess.run(
            command, env=bare, capture_output=True, text=True, timeout=60, check=False
        )
        assert run.returncode == 0, (command, run.stdout, run.stderr)
        assert ("test-task" if command[0] == "cadenza" else "leader") in run.stdout, run.stdout


def test_the_demo_names_its_web_console(demo: Demo) -> None:
    env = demo.env()
    assert env["CADENZA_CONSOLE"] == f"{env['CADENZA_API']}/console/"
    printed = f"web console: {env['CADENZA_CONSOLE']}"
    wait_for(lambda: printed in demo.log.read_text(), 10, "the demo to print the console's URL")
    with urllib.request.urlopen(env["CADENZA_CONSOLE"], timeout=10) as page:
        assert page.status == 200
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]

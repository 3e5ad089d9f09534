"""Commands run with ``--handler-user`` cannot read the dispatch token or other runs' spooled
results (their callback tokens); the sidecar refuses to start where it could not keep them out.

The token file and the spool live in a directory everyone may enter (as a pod's volumes are), so
only their own modes and the handler's uid keep a command out. The tests run as root.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sidecar.conftest import CallbackReceiver, SidecarLauncher, eventually

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")

# Tries to read every spooled result and the token file; prints what it could read.
PROBE = r"""
for f in "$1"/*.json* "$2"; do
  if cat "$f" >/dev/null 2>&1; then echo "read $f"; else echo "denied $f"; fi
done
"""


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory any user may enter (pytest's own temp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="cadenza-handler-user-"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=True)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param(("--handler-user", "nobody"), "denied", id="as-nobody"),
        pytest.param((), "read", id="as-the-sidecar"),
    ],
)
async def test_a_command_cannot_read_the_token_or_the_spool_as_another_user(
    open_dir: Path, receiver: CallbackReceiver, extra: tuple[str, ...], expected: str
) -> None:
    spool = open_dir / "spool"
    spool.mkdir()
    spool.chmod(0o777)  # as an emptyDir volume comes
    launcher = SidecarLauncher(open_dir)
    token_file = open_dir / "sidecar-0-token"  # where the launcher writes its first one's token
    try:
        sidecar = launcher.start(
            command=["/bin/sh", "-c", PROBE, "probe", str(spool), str(token_file)],
            extra_args=extra,
            spool_dir=spool,
        )
        assert stat.S_IMODE(spool.stat().st_mode) == 0o700
        receiver.answer = 503  # results stay in the spool, callbacks keep coming
        first = receiver.dispatch_body("first")
        assert (await sidecar.post(first)).status == 202
        await eventually(sidecar.spooled, what="the first run's result in the spool")

        probe = receiver.dispatch_body("probe")
        assert (await sidecar.post(probe)).status == 202
        (call, *_) = await eventually(
            lambda: receiver.attempts(probe["executionId"]), what="the probe's result"
        )
    finally:
        launcher.stop_all()

    lines = call.body["result"].splitlines()
    assert call.body["status"] == "succeeded", call.body
    assert len(lines) >= 2, lines  # the spooled result and the token file
    assert all(line.startswith(expected + " ") for line in lines), lines


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CADENZA_")}
    return subprocess.run(
        [sys.executable, "-m", "cadenza_sidecar", "--listen", "127.0.0.1", "--port", "0", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("mode", "args", "message"),
    [
        pytest.param(0o644, ("--handler-user", "nobody"), "defaultMode: 0400", id="token-readable"),
        pytest.param(0o600, ("--handler-user", "0"), "own uid", id="the-sidecars-own-uid"),
        pytest.param(0o600, ("--handler-user", "no-such-user"), "names no user", id="unknown-user"),
        pytest.param(
            0o600, ("--handler-user", "nobody:no-such-group"), "names no group", id="bad-group"
        ),
    ],
)
def test_the_start_is_refused_where_the_handler_user_could_not_be_kept_out(
    tmp_path: Path, mode: int, args: tuple[str, ...], message: str
) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken")
    token.chmod(mode)

    done = run_cli("--token-file", str(token), *args, "--command", "true")

    assert done.returncode == 2, done.stderr
    assert "--handler-user" in done.stderr and message in done.stderr, done.stderr


def test_http_mode_refuses_a_handler_user(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken")
    token.chmod(0o600)

    done = run_cli(
        "--token-file", str(token), "--handler-user", "nobody",
        "--handler-url", "http://127.0.0.1:8080/run",
    )  # fmt: skip

    assert done.returncode == 2
    assert "--handler-user applies to --command only" in done.stderr

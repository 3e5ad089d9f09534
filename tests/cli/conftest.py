"""The ``cadenza`` command run as a real process against a real replica's REST API.

The replica, namespace, database and callers are those of ``tests/api/conftest.py`` (imported
here, so each module of this directory gets its own). ``cli(...)`` runs ``.venv/bin/cadenza``
with ``CADENZA_API`` and ``CADENZA_TOKEN`` of the module's admin caller, a HOME of its own and no
KUBECONFIG, unless a test says otherwise.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.api import conftest as api_fixtures
from tests.api.conftest import Api

# The REST API's fixtures, one replica per module of this directory as there.
module_namespace = api_fixtures.module_namespace
module_database = api_fixtures.module_database
callers = api_fixtures.callers
api_env = api_fixtures.api_env
api = api_fixtures.api

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}"


Run = Callable[..., Result]


def base_env(api: Api, home: Path) -> dict[str, str]:
    path = os.pathsep.join([str(BIN), str(api.plane.bin_dir), "/usr/bin", "/bin"])
    return {"PATH": path, "HOME": str(home), "LANG": "C.UTF-8",
            "CADENZA_API": api.url, "CADENZA_TOKEN": api.token}  # fmt: skip


def run(argv: list[str], env: Mapping[str, str], input: str | None = None) -> Result:
    done = subprocess.run(
        argv, env=dict(env), input=input, capture_output=True, text=True, timeout=120, check=False
    )
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def cli(api: Api, tmp_path: Path) -> Run:
    """``cli(*args, env=None, input=None, program="cadenza")``; ``env`` replaces the base one's
    keys (a value of None removes the key)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)

    def call(
        *args: str,
        env: Mapping[str, str | None] | None = None,
        input: str | None = None,
        program: str = "cadenza",
    ) -> Result:
        merged: dict[str, str] = base_env(api, home)
        for key, value in (env or {}).items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return run([str(BIN / program), *args], merged, input)

    return call


def table(text: str) -> list[dict[str, str]]:
    """Rows of a table the CLI printed, keyed by header (columns cut at the headers' starts)."""
    lines = [line for line in text.splitlines() if line.strip()]
    starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", lines[0])]
    names = [lines[0][a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    return [
        {n: line[a:b].strip() for n, a, b in zip(names, starts, [*starts[1:], None], strict=True)}
        for line in lines[1:]
    ]


def one_line(result: Result) -> str:
    """The error line of a failed command: exactly one, and no traceback."""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result
    assert "Traceback" not in result.err
    return lines[0]

"""The sidecar's garbage-collector settings, applied in a fresh interpreter (they are the
process's own) and by the real command before it serves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROGRAM = """
import gc, json
from cadenza_sidecar import collector
before = gc.get_threshold()
collector.settle()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def test_settle_freezes_what_is_loaded_and_raises_only_the_youngest_threshold() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True, timeout=60
    )
    seen = json.loads(done.stdout)
    assert seen["frozen"] > 0
    assert seen["after"] == [10_000, *seen["before"][1:]]


def test_the_command_settles_the_collector_before_it_serves(tmp_path: Path) -> None:
    program = (
        "import asyncio, gc, sys\n"
        "from cadenza_sidecar import app, cli\n"
        "async def serve(config):\n"
        "    print(gc.get_threshold()[0], gc.get_freeze_count() > 0)\n"
        "    return 0\n"
        "app.serve = serve\n"
        "sys.exit(cli.main(['--handler-url', 'http://127.0.0.1:9/run', '--insecure-no-auth',"
        " '--spool-dir', sys.argv[1]]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["10000", "True"]

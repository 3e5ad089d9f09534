"""The operator's garbage-collector settings, applied in a fresh interpreter (they are the
process's own: setting them here would change the test run's collector)."""

from __future__ import annotations

import json
import subprocess
import sys

PROGRAM = """
import gc, json
from cadenza import collector
before = gc.get_threshold()
collector.settle()
gc.collect()
print(json.dumps({"before": before, "after": gc.get_threshold(),
                  "frozen": gc.get_freeze_count(), "enabled": gc.isenabled(),
                  "full_pauses": sum(collector.PAUSES.counts[2])}))
"""


def test_settle_freezes_what_is_loaded_raises_only_the_youngest_threshold_and_records() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True, timeout=60
    )
    seen = json.loads(done.stdout)
    assert seen["enabled"]
    assert seen["frozen"] > 0
    young, middle, oldest = seen["after"]
    assert young == 10_000 and young > seen["before"][0]
    assert [middle, oldest] == seen["before"][1:]
    assert seen["full_pauses"] >= 2  # settle's own collection and the one after it

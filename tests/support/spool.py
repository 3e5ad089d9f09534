"""What a sidecar's spool directory holds, read from its files as a restart would read them."""

from __future__ import annotations

import json
from pathlib import Path


def spooled(directory: Path) -> list[str]:
    """The execution ids of the results in the spool's files (group files of one record per
    line, and the single-record files of older sidecars), sorted.

    A running sidecar may delete a file between the listing and the read (its last record
    acknowledged): that file holds nothing any more. Rewrites are atomic renames, so a file that
    is read is whole."""
    ids = []
    for path in [*directory.glob("*.jsonl"), *directory.glob("*.json")]:
        try:
            content = path.read_bytes()
        except FileNotFoundError:
            continue
        for line in content.splitlines():
            if line.strip():
                ids.append(json.loads(line)["callback"]["executionId"])
    return sorted(ids)

"""``cadenza replicas``: the operator replicas, which one leads, and its fencing epoch."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from cadenza.commands import errors, output, times
from cadenza.commands.app import Session, Subparsers, leaf


def register(sub: Subparsers, flags: argparse.ArgumentParser) -> None:
    leaf(sub, flags, "replicas", show_replicas, "the operator replicas and who leads")


def show_replicas(s: Session) -> int:
    answer = s.client.get("/api/v1/replicas")
    if s.machine:
        s.show(answer)
    else:
        s.say(render(answer, s.now()))
    return errors.OK


def render(answer: dict[str, Any], now: datetime) -> str:
    leader = answer.get("leader")
    if leader:
        since = times.relative(leader.get("acquired_at"), now)
        head = f"Leader: {leader.get('instance_id')} (epoch {leader.get('epoch')}, since {since})"
    else:
        head = "Leader: none (no replica holds the lock)"
    headers = ("instance", "role", "epoch", "address", "host", "pid", "last heartbeat")
    rows = [
        [
            r.get("instance_id"),
            r.get("role"),
            r.get("epoch"),
            r.get("http_address"),
            r.get("host"),
            r.get("pid"),
            times.relative(r.get("last_heartbeat"), now),
        ]
        for r in answer.get("replicas") or []
    ]
    return head + "\n" + (output.table(headers, rows) if rows else "No replicas registered.")

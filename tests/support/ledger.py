"""What the pods really ran, checked against the history and against the ticks the schedules
imply: the fault suite's verdict after each scenario.

The demo app behind every test sidecar appends each call to its ledger (execution key, task,
tick, epoch, attempt) before it answers, so a run the history shows succeeded is in a ledger.
"""

from __future__ import annotations

import collections
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.scenario import Scenario

OPEN = ("claimed", "queued", "dispatched", "running")
SECOND = timedelta(seconds=1)


@dataclasses.dataclass
class Verdict:
    scenario: str
    runs: int = 0
    """Ticks the Tasks' schedules imply in the window (each must have exactly one run)."""
    duplicates: list[str] = dataclasses.field(default_factory=list)
    """Ticks a pod ran more than once (or under two execution keys)."""
    lost: list[str] = dataclasses.field(default_factory=list)
    """Ticks of the window with no run in the history."""
    stuck: list[str] = dataclasses.field(default_factory=list)
    """Runs still open past their deadline and its grace."""
    unrecorded: list[str] = dataclasses.field(default_factory=list)
    """Runs a pod ran to the end whose result the history does not hold."""
    started_late: list[str] = dataclasses.field(default_factory=list)
    """Runs a pod started after their deadline (the leader may have retried them elsewhere)."""
    died_with_pod: list[str] = dataclasses.field(default_factory=list)
    """Runs a pod ran but died (kill -9, deleted) before it reported them: ``lost``, as they
    must be (their results went with the pod); not a fault of the scheduler."""
    recovery_seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not (
            self.duplicates or self.lost or self.stuck or self.unrecorded or self.started_late
        )

    def row(self) -> str:
        return (
            f"| {self.scenario} | {self.runs} | {len(self.duplicates)} | {len(self.lost)} "
            f"| {len(self.stuck)} | {len(self.unrecorded)} | {len(self.started_late)} "
            f"| {len(self.died_with_pod)} | {self.recovery_seconds:.1f} s |"
        )


HEADER = (
    "| scenario | runs | duplicates | lost | open past deadline | results not recorded "
    "| started after deadline | results gone with a dead pod | recovery |"
    "\n|---|---|---|---|---|---|---|---|---|"
)


def naive(moment: str) -> datetime:
    return (
        datetime.fromisoformat(moment.replace("Z", "+00:00")).astimezone(UTC).replace(tzinfo=None)
    )


def check(
    scene: Scenario,
    names: list[str],
    start: datetime,
    end: datetime,
    verdict: Verdict,
    dead_pods: frozenset[str] = frozenset(),
) -> Verdict:
    """Every tick in [``start``, ``end``] of every every-second Task in ``names`` ran exactly
    once, was recorded with its result, and nothing is left open past its deadline. The Tasks
    must not retry (a retry runs a tick again on purpose) and must fire every missed tick
    (``FireAll``) with a deadline longer than any gap the scenario makes. A run that only a pod
    of ``dead_pods`` ran may be ``lost``: its result died with the pod."""
    rows = scene.sql(
        "SELECT id, task_name, scheduled_at, status, attempt, deadline_at FROM task_executions"
        " WHERE namespace = %s AND origin IN ('schedule', 'misfire')",
        scene.namespace,
    )
    ran: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
    by_key: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for entry in scene.ledger():
        task = str(entry.get("task") or "").rpartition("/")[2]
        ran[(task, str(naive(entry["scheduledAt"])))].append(entry)
        by_key[str(entry["executionId"])].append(entry)
    history: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
    for row in rows:
        history[(row["task_name"], str(row["scheduled_at"].replace(microsecond=0)))].append(row)
    tick = start.replace(microsecond=0)
    while tick <= end:
        for name in names:
            key = (name, str(tick))
            verdict.runs += 1
            if not history.get(key):
                verdict.lost.append(f"{name}@{tick}")
            if len(ran.get(key, [])) > 1 or len(history.get(key, [])) > 1:
                verdict.duplicates.append(f"{name}@{tick}: {ran.get(key)}")
        tick += SECOND
    for execution_key, entries in by_key.items():
        if len(entries) > 1:
            verdict.duplicates.append(f"{execution_key} ran {len(entries)} times")
    _check_rows(rows, set(names), by_key, dead_pods, (start, end), verdict)
    return verdict


def _check_rows(
    rows: list[dict[str, Any]],
    wanted: set[str],
    by_key: dict[str, list[dict[str, Any]]],
    dead_pods: frozenset[str],
    window: tuple[datetime, datetime],
    verdict: Verdict,
) -> None:
    """No run left open past its deadline; every run a pod ran recorded with its result (of
    all runs so far: an earlier window's late result counts too); results gone with a dead pod
    are counted in the ``window``."""
    now = datetime.now(UTC).replace(tzinfo=None)
    for row in rows:
        if row["task_name"] not in wanted:
            continue
        if row["status"] in OPEN and row["deadline_at"] and row["deadline_at"] < now - 30 * SECOND:
            verdict.stuck.append(f"{row['id']} {row['status']}")
        entries = by_key.get(f"{row['id']}-{row['attempt']}")
        if not entries:
            continue
        deadline = row["deadline_at"]
        if deadline and any(naive(e["time"]) > deadline for e in entries):
            verdict.started_late.append(f"{row['id']} after {deadline}")
        if row["status"] == "succeeded" or row["status"] in OPEN:
            continue  # still in flight (a tick after the window): its result is on its way
        if row["status"] == "lost" and {e["pod"] for e in entries} <= dead_pods:
            if window[0] <= row["scheduled_at"] <= window[1]:
                verdict.died_with_pod.append(f"{row['id']} on {entries[0]['pod']}")
        else:
            verdict.unrecorded.append(f"{row['id']} ran but is {row['status']}")

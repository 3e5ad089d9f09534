"""What a Task's status says: the state the status book keeps per Task between writes, and the
document and Events rendered from it and the run history's summary.

Nothing here talks to the API server or the database: ``status`` reads the history, writes the
document and posts the Events.

Invariants:
- ``lastTransitionTime`` changes only when a condition's status does; the first write of a new
  leader seeds it from the object (``seed``).
- Events are for what a person must notice (failures, recoveries, skipped ticks, misfires, a
  condition turning bad), never for every success, and each is handed out once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from cadenza.core.ids import TaskUid
from cadenza.kube.conditions import Condition
from cadenza.kube.views import StatusSeed
from cadenza.store import summary

PHASES = {
    "claimed": "Claimed",
    "queued": "Queued",
    "dispatched": "Dispatched",
    "running": "Running",
    "succeeded": "Succeeded",
    "failed": "Failed",
    "timed_out": "TimedOut",
    "cancelled": "Cancelled",
    "skipped": "Skipped",
    "lost": "Lost",
}

Event = tuple[str, str, str]
"""An Event to post about the Task: type (``Normal`` or ``Warning``), reason, message."""


def rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(slots=True)
class StatusEntry:
    uid: TaskUid
    namespace: str
    name: str
    generation: int = 0
    next_fire: datetime | None = None
    scheduled: Condition | None = None
    fault: Condition | None = None
    """``Ready=False`` for what the engine found wrong with the Task's plan; it stands in for the
    mirror's ``Ready`` (which sees only the spec) until the plan changes."""
    conditions: dict[str, Condition] = dataclasses.field(default_factory=dict)
    answered: int = 0
    """The generation the stored status answers (its ``observedGeneration``): behind
    ``generation``, the next write answers an edit and goes in the spec lane."""
    written: bytes | None = None
    """A digest of the status last written: all a write needs to know whether the next one
    changes anything, where the status itself would be kept for every Task."""
    transitions: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    seeded: bool = False
    reported_failures: int = 0
    reported_skipped: int = 0
    pending_events: list[Event] = dataclasses.field(default_factory=list)

    @property
    def series(self) -> str:
        """The entry's ``task`` label of the status writes counter."""
        return f"{self.namespace}/{self.name}"

    def seed(self, seed: StatusSeed) -> None:
        """Take over what the stored status says: when each condition last turned, and the
        failures and skips already reported (so a new leader posts no Event twice)."""
        for kind, status, since in seed.transitions:
            self.transitions[kind] = (status, since)
        self.reported_failures = seed.failures
        self.reported_skipped = seed.skipped
        self.seeded = True

    def document(self, facts: summary.Summary) -> dict[str, Any]:
        """The whole status, as a merge patch: a field that no longer applies (the next run of a
        Task just suspended) is null, which removes it."""
        last = facts.last
        return {
            "observedGeneration": self.generation,
            "nextScheduleTime": rfc3339(self.next_fire),
            "lastScheduleTime": rfc3339(facts.last_schedule_at),
            "lastSuccessfulTime": rfc3339(facts.last_success_at),
            "lastExecution": _execution(last) if last else None,
            "active": [
                {
                    "id": str(r.id),
                    "pod": r.pod_name or "",
                    "tick": rfc3339(r.scheduled_at),
                    "attempt": r.attempt,
                    "startedAt": rfc3339(r.dispatched_at),
                }
                for r in facts.open
                if r.status.value != "queued"
            ],
            "queued": sum(1 for r in facts.open if r.status.value == "queued"),
            "counters": facts.counters,
            "consecutiveFailures": facts.consecutive_failures,
            "conditions": self.render_conditions(),
        }

    def render_conditions(self) -> list[dict[str, Any]]:
        """The ``conditions`` list: each keeps the time it last turned; one that turns bad
        brings a Warning Event."""
        wanted = dict(self.conditions)
        # Only in place of the mirror's Ready: the conditions it derives arrive together.
        if self.fault is not None and "Ready" in wanted:
            wanted["Ready"] = self.fault
        if self.scheduled is not None:
            wanted["Scheduled"] = self.scheduled
        out = []
        for c in sorted(wanted.values(), key=lambda c: c.type):
            previous = self.transitions.get(c.type)
            if previous is None or previous[0] != c.status:
                previous = (c.status, rfc3339(datetime.now(UTC)) or "")
                self.transitions[c.type] = previous
                # Scheduled=False only echoes Ready or spec.suspend: no event of its own.
                if c.status == "False" and c.type != "Scheduled":
                    self.pending_events.append(("Warning", c.reason, c.message))
            out.append(
                {
                    "type": c.type,
                    "status": c.status,
                    "reason": c.reason,
                    "message": c.message,
                    "observedGeneration": c.observed_generation,
                    "lastTransitionTime": previous[1],
                }
            )
        return out

    def take_events(self, facts: summary.Summary) -> list[Event]:
        """The Events to post now: those pending, and what the history says changed since the
        last report (a failure, a recovery, skipped ticks). Each is handed out once."""
        failures, was = facts.consecutive_failures, self.reported_failures
        if failures > was and facts.last is not None:
            self.pending_events.append(
                (
                    "Warning",
                    "RunFailed",
                    f"run {facts.last.id} {PHASES[facts.last.status.value].lower()}: "
                    f"{facts.last.error or 'no message'} ({failures} in a row)",
                )
            )
        elif failures == 0 and was > 0:
            self.pending_events.append(
                ("Normal", "Recovered", f"a run succeeded after {was} failed in a row")
            )
        skipped, skipped_was = facts.counters["skipped"], self.reported_skipped
        if skipped > skipped_was:
            self.pending_events.append(
                (
                    "Normal",
                    "Skipped",
                    f"{skipped - skipped_was} tick(s) skipped: a run was still going",
                )
            )
        self.reported_failures, self.reported_skipped = failures, skipped
        events, self.pending_events = self.pending_events, []
        return events


def digest(status: dict[str, Any]) -> bytes:
    canonical = json.dumps(status, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(canonical.encode(), digest_size=16).digest()


def _execution(run: summary.RunBrief) -> dict[str, Any]:
    return {
        "id": str(run.id),
        "attempt": run.attempt,
        "phase": PHASES[run.status.value],
        "message": (run.error or "")[:1024],
        # null removes the previous run's tick or pod (a merge patch merges nested objects too)
        "tick": rfc3339(run.scheduled_at),
        "pod": run.pod_name or None,
    }

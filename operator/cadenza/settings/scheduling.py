"""``CADENZA_*`` variables of the leader's run pipeline: deadlines, status write pacing, history
pruning and the dispatch token's rotation grace."""

from __future__ import annotations

from dataclasses import dataclass

from cadenza.settings.reading import Reader


@dataclass(frozen=True)
class SchedulingSettings:
    deadline_grace_seconds: float = 10.0
    """How long past a run's deadline the leader waits for the pod's own timeout report before
    it cancels the run there and counts the attempt as lost (``CADENZA_DEADLINE_GRACE_SECONDS``)."""

    status_min_interval_seconds: float = 2.0
    """A Task's status is written at most once per this many seconds, however often it fires
    (``CADENZA_STATUS_MIN_INTERVAL_SECONDS``)."""

    status_max_writes_per_second: float = 20.0
    """Task status writes per second across all Tasks that follow firing: next run, counters,
    the last run (``CADENZA_STATUS_MAX_WRITES_PER_SECOND``). Bounds the API writes firing causes,
    whatever the fire rate."""

    status_max_spec_writes_per_second: float = 200.0
    """Task status writes per second that answer a Task created or edited (its status's
    ``observedGeneration`` behind its generation), budgeted apart from those that follow firing
    (``CADENZA_STATUS_MAX_SPEC_WRITES_PER_SECOND``). One per Task applied, coalesced: so 10,000
    Tasks applied at once each get a status within a minute, where at the firing budget alone
    the last would wait over eight minutes."""

    retention_interval_seconds: float = 60.0
    """How often finished runs beyond each Task's ``spec.history`` are pruned
    (``CADENZA_RETENTION_INTERVAL_SECONDS``)."""

    claim_ahead_seconds: float = 1.0
    """How long before its tick a run of a Parallel Task without ``maxConcurrent`` is claimed
    and, when the Task's pods hold runs (sidecar protocol 3), recorded, to be sent
    ``CADENZA_SEND_AHEAD_SECONDS`` ahead and started by the pod at the tick
    (``CADENZA_CLAIM_AHEAD_SECONDS``). Other Tasks are claimed 0.25 s ahead. A change to a Task
    within this window of its tick applies from the next tick on. With 1,000 Tasks every second
    on a 2-core machine, 0.25 left about half of each tick's runs to be recorded and sent after
    it; 0.5 (the default until 2026-12-06) had them at their pods before it, but a slow claim or
    record pushed a tick's last sends past it (p99 225-372 ms at the pods); a second ahead with
    the sends 0.45 s ahead, 56-173 ms (docs/benchmark.md). A longer lead helps only while the
    leader keeps up."""

    send_ahead_seconds: float = 0.45
    """How long before its tick a run claimed ``CADENZA_CLAIM_AHEAD_SECONDS`` ahead is sent to a
    pod that holds runs, at the latest (``CADENZA_SEND_AHEAD_SECONDS``). Below the claim lead, a
    run is recorded (its pod chosen) as soon as it is claimed and leaves at the send lead, so the
    claim's and the record's transactions are off the path of the sends; at or above it, runs go
    as soon as they are recorded (the behaviour before 2026-12-06: set it to the claim lead). A
    tick claimed in waves keeps the same gap between each wave's claim and its sends."""

    claim_ahead_max_seconds: float = 8.0
    """How far ahead of a crowded tick the runs of such Tasks are claimed at most: up to 1,000
    Tasks due at the same tick keep ``CADENZA_CLAIM_AHEAD_SECONDS``; with more, the first 1,000
    are claimed a second earlier than that and each further 250 0.25 s earlier than the ones
    before, up to this (``CADENZA_CLAIM_AHEAD_MAX_SECONDS``). So 10,000 Tasks due in one second
    are recorded and sent over the 8 s before it, all before their pods start them at the tick."""

    max_dispatches_in_flight: int = 1000
    """How many runs the leader has on their way to pods at once, each from its record to the
    pod's answer (``CADENZA_MAX_DISPATCHES_IN_FLIGHT``; the rare cancel or question to a pod
    counts too). Runs due beyond it wait their turn in the order they were claimed, counted by
    ``cadenza_dispatches_waiting``: offered more runs than its pods take, the leader keeps a
    queue of runs rather than thousands of half-done dispatches. Their ticks are claimed on time
    all the same (each still fires once); they are sent late."""

    dispatch_token_grace_seconds: float = 300.0
    """After an Executor's dispatch token was rotated (``cadenza.dev/rotate-token``), how long
    a sidecar that refuses the new token with 401 is sent the previous one instead, while its
    kubelet has not delivered the new one yet (``CADENZA_DISPATCH_TOKEN_GRACE_SECONDS``). Keep it
    no longer than the sidecars' ``--token-grace-seconds`` (300 by default)."""


def read_scheduling(read: Reader) -> SchedulingSettings:
    return SchedulingSettings(
        deadline_grace_seconds=read(
            "CADENZA_DEADLINE_GRACE_SECONDS", float, 10.0, minimum=0, maximum=3600
        ),
        status_min_interval_seconds=read(
            "CADENZA_STATUS_MIN_INTERVAL_SECONDS", float, 2.0, minimum=0.1, maximum=3600
        ),
        status_max_writes_per_second=read(
            "CADENZA_STATUS_MAX_WRITES_PER_SECOND", float, 20.0, minimum=0.1, maximum=1000
        ),
        status_max_spec_writes_per_second=read(
            "CADENZA_STATUS_MAX_SPEC_WRITES_PER_SECOND", float, 200.0, minimum=0.1, maximum=1000
        ),
        retention_interval_seconds=read(
            "CADENZA_RETENTION_INTERVAL_SECONDS", float, 60.0, minimum=1, maximum=86400
        ),
        claim_ahead_seconds=read(
            "CADENZA_CLAIM_AHEAD_SECONDS", float, 1.0, minimum=0.25, maximum=10
        ),
        send_ahead_seconds=read(
            "CADENZA_SEND_AHEAD_SECONDS", float, 0.45, minimum=0.05, maximum=10
        ),
        claim_ahead_max_seconds=read(
            "CADENZA_CLAIM_AHEAD_MAX_SECONDS", float, 8.0, minimum=0.25, maximum=10
        ),
        max_dispatches_in_flight=read(
            "CADENZA_MAX_DISPATCHES_IN_FLIGHT", int, 1000, minimum=1, maximum=1_000_000
        ),
        dispatch_token_grace_seconds=read(
            "CADENZA_DISPATCH_TOKEN_GRACE_SECONDS", float, 300.0, minimum=0, maximum=86400
        ),
    )

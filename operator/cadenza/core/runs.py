"""What happens next to a run: one pure decision after each thing that can happen to it.

Every adapter asks here instead of deciding for itself: the leader after a pod answered a
dispatch, after a run's deadline passed and after asking a pod about a run it took over; any
replica after a sidecar's callback. The store then carries the decision out as a guarded update
whose allowed source states come from :mod:`cadenza.core.transitions` through this module too.

Invariants:
- A failed, timed-out or lost attempt is retried while the Task's retry policy allows
  (:func:`after_bad_attempt`), else it ends the run with that status; the decision is the same
  whoever meets the failure first.
- A run the leader gave up as ``lost`` is corrected by a late real result but never reopened:
  nobody tracks it any more, so a retry would run unobserved.
- A refusal that every pod would give (a malformed request) ends the attempt at once instead
  of being repeated on every pod; a busy, draining or unreachable pod hands the run to the next
  eligible pod without further ado.
- An attempt that every pod refused as busy waits for room (:func:`offer_again_at`): offered
  again, at growing intervals, until the Task's ``startingDeadlineSeconds`` (else its
  ``timeoutSeconds``) after it was due; only then does it fail as no pod took it.
- A run an earlier leader recorded as sent but never saw accepted is sent again, under the same
  key and to the same pod, when that pod does not know it (:func:`send_again_when_unknown`).
- Pure: time and randomness come in as arguments.
"""

from __future__ import annotations

import dataclasses
import enum
import random
from datetime import datetime, timedelta
from typing import Any

from cadenza.core import retry as retry_
from cadenza.core import texts
from cadenza.core.transitions import ACTIVE, RESULTS, RunStatus, apply_callback

OPEN = frozenset({RunStatus.CLAIMED, RunStatus.QUEUED, RunStatus.DISPATCHED, RunStatus.RUNNING})
"""States of a run that is not over yet."""
DISPATCHABLE = frozenset({RunStatus.CLAIMED, RunStatus.QUEUED})
"""States from which an attempt may be sent to a pod."""
REPORTABLE_FROM = frozenset(ACTIVE | {RunStatus.LOST})
"""States in which the current attempt may still end by a report. Not ``queued``: a queued run's
current attempt is either closed already (a retry waits) or was never sent."""


def sources_of(outcome: RunStatus, *, by_leader: bool = False) -> frozenset[RunStatus]:
    """The states from which an attempt may end with ``outcome``: a real result from any state
    that can still report; the leader's ``lost``, and its ``cancelled`` (the Task is gone), from
    any open state."""
    if outcome is RunStatus.LOST or (by_leader and outcome is RunStatus.CANCELLED):
        return OPEN
    if outcome not in RESULTS:
        raise ValueError(f"{outcome.value} is not how an attempt ends")
    return REPORTABLE_FROM


def may_send(status: RunStatus, current_attempt: int, attempt: int) -> bool:
    """Whether ``attempt`` of a run in ``status`` (at ``current_attempt``) may be pointed at a
    pod now: the run waits for one, or that very attempt was just refused by another pod."""
    return status in DISPATCHABLE or (status is RunStatus.DISPATCHED and current_attempt == attempt)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as reported by a sidecar or decided by the leader."""

    status: RunStatus
    error: str | None = None
    result: Any = None
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    def __post_init__(self) -> None:
        # What a pod sent is fitted here, once, to what the history can hold (:mod:`texts`).
        object.__setattr__(self, "error", texts.fit_text(self.error))
        object.__setattr__(self, "result", texts.fit_result(self.result))
        object.__setattr__(self, "exit_code", texts.fit_exit_code(self.exit_code))


@dataclasses.dataclass(frozen=True)
class Finish:
    """End the run with this outcome of its current attempt."""

    outcome: Outcome


@dataclasses.dataclass(frozen=True)
class Retry:
    """Close the current attempt with ``outcome`` and queue the run's next attempt for ``at``."""

    outcome: Outcome
    at: datetime


Next = Finish | Retry


def after_bad_attempt(
    policy: retry_.RetryPolicy,
    attempt: int,
    outcome: Outcome,
    now: datetime,
    rng: random.Random,
    *,
    reopen: bool = True,
) -> Next:
    """An attempt failed, timed out, was lost or found no pod: retry it or end the run."""
    delay = retry_.retry_delay(policy, attempt, rng) if reopen else None
    if delay is None:
        return Finish(outcome)
    return Retry(outcome, now + timedelta(seconds=delay))


def after_report(
    current: RunStatus,
    outcome: Outcome,
    policy: retry_.RetryPolicy,
    attempt: int,
    now: datetime,
    rng: random.Random,
) -> Next | None:
    """A sidecar reported the final ``outcome`` of the run's current ``attempt`` (token and
    attempt already checked); what to do, or None to ignore a duplicate or late report."""
    if outcome.status not in RESULTS:
        raise ValueError(f"a callback reports one of {sorted(RESULTS)}, not {outcome.status}")
    if apply_callback(current, outcome.status) is None or current not in REPORTABLE_FROM:
        return None
    if outcome.status in (RunStatus.FAILED, RunStatus.TIMED_OUT):
        return after_bad_attempt(
            policy, attempt, outcome, now, rng, reopen=current is not RunStatus.LOST
        )
    return Finish(outcome)


def after_pod_view(state: str, view: dict[str, Any]) -> Outcome | None:
    """What a pod's run view (``GET /v1/executions/{key}``) says about a run taken over from an
    earlier leader: its final outcome, or None while it is still running there."""
    try:
        status = RunStatus(state)
    except ValueError:
        return None
    if status not in RESULTS:
        return None
    return Outcome(
        status=status,
        error=view.get("error"),
        result=view.get("result"),
        exit_code=view.get("exitCode"),
        started_at=_moment(view.get("startedAt")),
        finished_at=_moment(view.get("finishedAt")),
    )


def send_again_when_unknown(status: RunStatus) -> bool:
    """A pod says it does not know the run an earlier leader pointed at it: whether to send the
    same attempt to that pod again (True) rather than count it lost.

    Only a run still ``dispatched`` is sent again: its leader never heard the pod accept, so it
    may have died before the request left. The same execution key goes to the same pod, which
    runs a key once and refuses it after its deadline, so the old request, should it still
    arrive, cannot make a second run. A ``running`` run was accepted: the pod lost it.
    """
    return status is RunStatus.DISPATCHED


def _moment(value: Any) -> datetime | None:
    """An RFC 3339 time from a pod's run view; None when absent or not one (the pod's own
    times are history worth keeping, not worth failing over)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


class Answer(enum.StrEnum):
    """A pod's answer to a dispatch, as the run rules see it."""

    STARTED = "started"
    """The pod has the run (accepted now, or it already had the key)."""
    MAYBE_STARTED = "maybe_started"
    """The request left but its answer is missing: the run may be running there."""
    BUSY = "busy"
    DRAINING = "draining"
    UNREACHABLE = "unreachable"
    """Never reached the pod (connection refused, DNS): nothing can be running there."""
    POD_REFUSED = "pod_refused"
    """This pod will not take it (its token, its own error); another pod may."""
    MALFORMED = "malformed"
    """The request itself was refused (400, 413): every pod would answer the same."""


class AfterAnswer(enum.Enum):
    RUNNING = "running"
    """The run is the pod's now: wait for its callback (or its deadline)."""
    NEXT_POD = "next_pod"
    """Offer the same attempt to the next eligible pod at once."""
    END_ATTEMPT = "end_attempt"
    """Stop offering this attempt: it failed (and may be retried by the policy)."""


ROOM_FIRST_WAIT_SECONDS = 0.5
"""The wait before an attempt every pod refused as busy is offered again the first time."""
ROOM_MAX_WAIT_SECONDS = 4.0
"""The longest wait between two offers of such an attempt: each wait doubles up to this."""


def offer_again_at(
    due: datetime, now: datetime, offers: int, may_wait_seconds: int, rng: random.Random
) -> datetime | None:
    """Every pod answered busy to an attempt due at ``due``, offered ``offers`` times so far:
    when to offer it again, or None when it waited all it may (``may_wait_seconds`` after it
    was due): then it fails as no pod took it.

    Busy is the pods' own back-pressure (their slots free as runs end), so a crowd of runs
    larger than the pods' room runs late instead of failing at once. The waits double from
    ``ROOM_FIRST_WAIT_SECONDS`` up to ``ROOM_MAX_WAIT_SECONDS``, each drawn from its second
    half, so that runs refused together do not come back together; the last offer is made at
    the limit itself."""
    limit = due + timedelta(seconds=may_wait_seconds)
    if now >= limit:
        return None
    wait = min(ROOM_FIRST_WAIT_SECONDS * 2 ** max(offers - 1, 0), ROOM_MAX_WAIT_SECONDS)
    return min(now + timedelta(seconds=rng.uniform(wait / 2, wait)), limit)


def after_answer(answer: Answer) -> AfterAnswer:
    if answer in (Answer.STARTED, Answer.MAYBE_STARTED):
        # A missing answer must never send the run to a second pod: the idempotency key only
        # protects within one pod. The deadline settles it if the pod never reports.
        return AfterAnswer.RUNNING
    if answer is Answer.MALFORMED:
        return AfterAnswer.END_ATTEMPT
    return AfterAnswer.NEXT_POD

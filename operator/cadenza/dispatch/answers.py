"""What a sidecar's answer means: the outcome of a dispatch, a batch, a probe. No HTTP here.

Every function maps an answer already read (status and body, at most its kind's cap of bytes:
see :mod:`cadenza.dispatch.client`) to a result; none raises for a pod that misbehaves.

Invariant: an answer too large to read is that pod's error, judged by its status alone (the
body is never looked at). A status that says the pod may have the run (2xx, or a 5xx other than
503) leaves the run with that pod, as a lost answer does; any other sends it to the next pod.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any

from cadenza.core import runs as rules

_ERROR_BODY_CHARS = 300
HOLDING_PROTOCOL = 3
"""The sidecar protocol version that added ``startAt``."""


class Outcome(enum.StrEnum):
    ACCEPTED = "accepted"
    """202: the pod started the run."""
    DUPLICATE = "duplicate"
    """200: the pod already has this execution key; as good as accepted."""
    BUSY = "busy"
    """429: the pod runs ``--max-concurrency`` runs."""
    DRAINING = "draining"
    """503: the pod is shutting down."""
    REJECTED = "rejected"
    """400/401/403/413 (or another unexpected answer): this pod will not take the request."""
    UNREACHABLE = "unreachable"
    """No usable answer: connection refused/reset, timeout, DNS, a 5xx other than 503, an
    answer larger than its cap."""


# What a batch item's "result" means; an item without a known one is judged by its status.
_BATCH_OUTCOMES = {
    "accepted": Outcome.ACCEPTED,
    "known": Outcome.DUPLICATE,
    "busy": Outcome.BUSY,
    "draining": Outcome.DRAINING,
    "refused": Outcome.REJECTED,
}


# A status that says the pod may have the run (the answer's body aside).
_MAY_HAVE_STARTED = (Outcome.ACCEPTED, Outcome.DUPLICATE, Outcome.UNREACHABLE)


@dataclasses.dataclass(frozen=True)
class DispatchResult:
    outcome: Outcome
    status: int | None
    body: dict[str, Any] | None
    error: str | None
    pod: str | None
    """The pod name the sidecar reported, when it answered with one."""
    may_have_started: bool = False
    """The request left us but its answer did not arrive: the run may be running there."""

    @property
    def started(self) -> bool:
        """The pod has the run (new or duplicate)."""
        return self.outcome in (Outcome.ACCEPTED, Outcome.DUPLICATE)

    @property
    def try_another_pod(self) -> bool:
        """Another pod may take the run; False for a request every pod would refuse (400, 413)
        and for runs the pod already has."""
        if self.outcome in (Outcome.BUSY, Outcome.DRAINING, Outcome.UNREACHABLE):
            return True
        return self.outcome is Outcome.REJECTED and self.status not in (400, 413)

    @property
    def answer(self) -> rules.Answer:
        """What the run rules make of it (:func:`cadenza.core.runs.after_answer`)."""
        if self.started:
            return rules.Answer.STARTED
        if self.may_have_started:
            return rules.Answer.MAYBE_STARTED
        if self.outcome is Outcome.BUSY:
            return rules.Answer.BUSY
        if self.outcome is Outcome.DRAINING:
            return rules.Answer.DRAINING
        if self.outcome is Outcome.UNREACHABLE:
            return rules.Answer.UNREACHABLE
        return rules.Answer.POD_REFUSED if self.try_another_pod else rules.Answer.MALFORMED


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    ok: bool
    in_flight: int | None
    capacity: int | None
    draining: bool
    error: str | None
    protocol: int | None = None
    """The sidecar's protocol version, when its health answer says it."""

    @property
    def holds_runs(self) -> bool:
        """The sidecar honours ``startAt`` (protocol version 3): a run may be sent ahead of its
        tick and is started at it."""
        return (self.protocol or 0) >= HOLDING_PROTOCOL


def classify(status: int) -> Outcome:
    """The outcome of a dispatch answered with HTTP ``status``."""
    if status == 202:
        return Outcome.ACCEPTED
    if status == 200:
        return Outcome.DUPLICATE
    if status == 429:
        return Outcome.BUSY
    if status == 503:
        return Outcome.DRAINING
    if status >= 500:
        return Outcome.UNREACHABLE
    return Outcome.REJECTED


def answer_result(
    outcome: Outcome, status: int, body: dict[str, Any] | None, raw: bytes
) -> DispatchResult:
    """The result of a dispatch answered ``status`` with ``body`` (``raw`` for the message)."""
    error = None
    if outcome not in (Outcome.ACCEPTED, Outcome.DUPLICATE):
        error = f"HTTP {status}: {message(body, raw)}"
    pod = body.get("pod") if body else None
    return DispatchResult(
        outcome, status, body, error, pod if isinstance(pod, str) else None,
        may_have_started=outcome is Outcome.UNREACHABLE,
    )  # fmt: skip


def too_large_result(status: int, limit: int) -> DispatchResult:
    """The result of a dispatch answered ``status`` with a body of more than ``limit`` bytes:
    unreachable, and possibly started when the status says the pod may have the run."""
    return DispatchResult(
        Outcome.UNREACHABLE, status, None, too_large_error(status, limit), None,
        may_have_started=classify(status) in _MAY_HAVE_STARTED,
    )  # fmt: skip


def too_large_error(status: int, limit: int) -> str:
    return f"HTTP {status}: the answer is larger than {limit} bytes; not read further"


def batch_results(
    status: int, body: dict[str, Any] | None, raw: bytes, count: int
) -> list[DispatchResult]:
    """The results of a batch of ``count`` requests answered ``status`` with ``body``.

    Not 200: the answer is about the batch as a whole (401, 429, 503, 5xx) and is every
    request's result. 200 without exactly ``count`` results: every request's
    answer is lost, and any of them may have started.
    """
    if status != 200:
        return [answer_result(classify(status), status, body, raw)] * count
    items = body.get("results") if body else None
    if not isinstance(items, list) or len(items) != count:
        lost = DispatchResult(
            Outcome.UNREACHABLE, status, body, "HTTP 200 whose results do not match the batch",
            None, may_have_started=True,
        )  # fmt: skip
        return [lost] * count
    return [batch_item_result(item) for item in items]


def batch_item_result(item: Any) -> DispatchResult:
    """One entry of a batch answer as the result ``send`` would have given for its request:
    accepted and known started the run, busy and draining send it elsewhere, refused is the 400
    every pod would give. A known run's view is the body, as for a duplicate ``send``."""
    if not isinstance(item, dict):
        return answer_result(Outcome.UNREACHABLE, 200, None, b"a batch result is not an object")
    status = item.get("status")
    status = status if isinstance(status, int) and not isinstance(status, bool) else 200
    kind = item.get("result")
    outcome = _BATCH_OUTCOMES.get(kind) if isinstance(kind, str) else None
    if outcome is None:
        outcome = classify(status) if status != 200 else Outcome.UNREACHABLE
    run = item.get("run")
    if outcome is Outcome.DUPLICATE and isinstance(run, dict):
        body = run
    else:
        body = {k: v for k, v in item.items() if k not in ("result", "status")}
    return answer_result(outcome, status, body, b"")


def probe_result(status: int, body: dict[str, Any] | None, raw: bytes) -> ProbeResult:
    """What a health answer means; only ``200 {"status": "ok"}`` is healthy."""
    in_flight = _count(body, "inFlight")
    capacity = _count(body, "capacity")
    if status == 200 and body is not None and body.get("status") == "ok":
        return ProbeResult(True, in_flight, capacity, False, None, _count(body, "protocol"))
    if status == 503 and body is not None and body.get("draining") is True:
        return ProbeResult(False, in_flight, capacity, True, "draining (HTTP 503)")
    return ProbeResult(False, in_flight, capacity, False, f"HTTP {status}: {message(body, raw)}")


def json_object(raw: bytes) -> dict[str, Any] | None:
    """The body as a JSON object; None when it is empty, not JSON, or not an object."""
    try:
        value = json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def message(body: dict[str, Any] | None, raw: bytes) -> str:
    """The answer's ``error``, else the start of its text."""
    if body is not None and isinstance(body.get("error"), str):
        return str(body["error"])
    text = raw.decode("utf-8", errors="replace").strip()
    return text[:_ERROR_BODY_CHARS] or "(empty body)"


def _count(body: dict[str, Any] | None, key: str) -> int | None:
    value = body.get(key) if body else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None

"""Admission of one dispatch body: the decision both ``POST /v1/executions`` and every item of
``POST /v1/executions:batch`` go through.

Invariants:
- The checks run in the protocol's order: the body (400), a known executionId (200, the existing
  run: never a second one, even while busy or draining), a deadline already past (409: never
  started late), draining (503), busy (429), started (202); busy is either
  ``--max-concurrency`` runs in flight or a full spool (then ``reason`` names the limit). The
  single endpoint answers ``Admission.status`` with ``Admission.body``; a batch item carries the
  same status and the same fields, so the two answers cannot disagree.
- ``admit`` never awaits: the idempotency check and the registration of the new run happen in
  one step of the event loop, so duplicates (concurrent requests, or the same id twice in one
  batch) cannot both start a run, and a batch fills the pod's capacity item by item.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cadenza_sidecar import protocol
from cadenza_sidecar.protocol import InvalidRequest, JsonObject
from cadenza_sidecar.runs import Busy, Draining, RunRegistry


class Result(enum.StrEnum):
    """What became of one dispatch body; the ``result`` of a batch item."""

    ACCEPTED = "accepted"
    KNOWN = "known"
    BUSY = "busy"
    DRAINING = "draining"
    REFUSED = "refused"


@dataclass(frozen=True)
class Admission:
    result: Result
    status: int
    """The HTTP status the single endpoint answers."""
    body: JsonObject
    """The single endpoint's answer body: for ``KNOWN`` the run view."""

    def batch_item(self, execution_id: Any) -> JsonObject:
        """This admission as one entry of a batch answer.

        ``executionId`` is echoed when it was a string (a refused item may lack a usable one).
        The run view of a known run goes under ``run``: merged flat, its ``result`` (the run's
        output) would clash with the item's ``result`` (what became of the request).
        """
        item: JsonObject = {
            "executionId": execution_id if isinstance(execution_id, str) else None,
            "result": self.result.value,
            "status": self.status,
        }
        if self.result is Result.KNOWN:
            item["run"] = self.body
        else:
            item.update({k: v for k, v in self.body.items() if k != "executionId"})
        return item


def refused(exc: InvalidRequest) -> Admission:
    return Admission(Result.REFUSED, 400, {"error": exc.message, "field": exc.field})


def admit(
    registry: RunRegistry, pod: str, body: Any, callbacks_allowed: tuple[str, ...] = ()
) -> Admission:
    """Validates one decoded dispatch body and, unless the run is known or the pod cannot take
    it, starts the run. With ``callbacks_allowed``, a callback URL outside them is a 400."""
    try:
        execution = protocol.execution_request_from(body)
        if callbacks_allowed:
            _check_callbacks(execution, callbacks_allowed)
    except InvalidRequest as exc:
        return refused(exc)
    known = registry.view(execution.execution_id)
    if known is not None:
        return Admission(Result.KNOWN, 200, known)
    if not execution.may_start(datetime.now(UTC)):  # it arrived late (a hung or slow pod)
        late = "the run's deadline passed before it arrived; it was not started"
        return Admission(Result.REFUSED, 409, {"error": late, "field": "deadline"})
    try:
        run = registry.start(execution)
    except Draining:
        return Admission(Result.DRAINING, 503, {"error": "draining"})
    except Busy as busy:
        answer: JsonObject = {
            "error": "busy",
            "inFlight": busy.in_flight,
            "capacity": busy.capacity,
        }
        if busy.reason is not None:
            answer["reason"] = busy.reason
        return Admission(Result.BUSY, 429, answer)
    return Admission(
        Result.ACCEPTED,
        202,
        {"executionId": run.request.execution_id, "state": "running", "pod": pod},
    )


def _check_callbacks(execution: protocol.ExecutionRequest, allowed: tuple[str, ...]) -> None:
    for field, url in (
        ("callbackUrl", execution.callback_url),
        ("callbackBatchUrl", execution.callback_batch_url),
    ):
        if url is not None and not url.startswith(allowed):
            raise InvalidRequest(
                field,
                f"{field} is not among the callback URLs this sidecar allows (--callback-allow)",
            )

"""The rules every callback attempt is judged by, single or batched: what an HTTP status means
for the report, and how long to wait before the next attempt.

Invariants:
- 2xx acknowledges a report and 403, 404, 409, 410 refuse it for good: both end its delivery.
  Every other status, and no status at all, means try again.
- Retry delays grow exponentially from the initial delay to the cap, drawn in the upper half of
  the step (jitter), and never fall below a numeric ``Retry-After`` (itself capped).
"""

from __future__ import annotations

import enum
import random

import aiohttp

from cadenza_sidecar.protocol import PERMANENT_REFUSAL_STATUSES
from cadenza_sidecar.settings import CallbackSettings


class Verdict(enum.Enum):
    ACKNOWLEDGED = "acknowledged"
    REFUSED = "refused"
    RETRY = "retry"


def verdict(status: int | None) -> Verdict:
    """What a callback answered with ``status`` (None: no usable answer) means for the report."""
    if status is None:
        return Verdict.RETRY
    if 200 <= status < 300:
        return Verdict.ACKNOWLEDGED
    if status in PERMANENT_REFUSAL_STATUSES:
        return Verdict.REFUSED
    return Verdict.RETRY


def backoff_delay(
    attempt: int, settings: CallbackSettings, retry_after: float | None = None
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    Half-jitter: a uniform pick in the upper half of the exponential step, so retries of many
    results spread out yet never come sooner than half the nominal delay.
    """
    step = min(
        settings.backoff_max_seconds,
        settings.backoff_initial_seconds * 2 ** min(attempt - 1, 32),
    )
    delay = random.uniform(step / 2, step)
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.backoff_max_seconds))
    return delay


def retry_after(response: aiohttp.ClientResponse) -> float | None:
    """A numeric ``Retry-After`` in seconds, if the answer carries one."""
    raw = response.headers.get("Retry-After", "")
    try:
        seconds = float(raw)
    except ValueError:
        return None  # absent, or an HTTP date: the ordinary backoff is good enough
    return seconds if seconds >= 0 else None

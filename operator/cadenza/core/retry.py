"""Retries: whether a failed attempt is retried, and after how long.

The delay before retry number ``n`` (after attempt ``n`` failed, attempts counted from 1) is
``backoff * multiplier**(n-1)``, capped at ``max_backoff``, then spread by ``±jitter`` of itself
so that runs failing together do not retry together. The spread is drawn uniformly from
``[base*(1-jitter), min(base*(1+jitter), max_backoff)]``: never negative, never above the cap, and
without the pile-up exactly at the cap that clamping a symmetric spread would cause.

Invariants: pure (randomness comes from the ``rng`` argument, so tests seed it); ``None`` means
the attempts are exhausted.
"""

from __future__ import annotations

import dataclasses
import math
import random


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    """Total attempts including the first; 1 means never retry."""
    backoff_seconds: float
    """Delay before the first retry, before jitter."""
    max_backoff_seconds: float
    """Upper bound of any delay, jitter included."""
    multiplier: float = 2.0
    """Growth of the delay per retry; 1 gives a constant delay."""
    jitter: float = 0.2
    """Fraction of the delay by which it is spread either way, 0 to 1."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if not 0 <= self.backoff_seconds <= self.max_backoff_seconds:
            raise ValueError(
                "need 0 <= backoff_seconds <= max_backoff_seconds, got"
                f" {self.backoff_seconds} and {self.max_backoff_seconds}"
            )
        if not math.isfinite(self.max_backoff_seconds):
            raise ValueError("max_backoff_seconds must be finite")
        if not 1 <= self.multiplier < math.inf:
            raise ValueError(f"multiplier must be at least 1, got {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, got {self.jitter}")


NO_RETRY = RetryPolicy(max_attempts=1, backoff_seconds=0, max_backoff_seconds=0)
"""The policy of a Task that sets no ``retry``."""


def retry_delay(policy: RetryPolicy, attempt: int, rng: random.Random) -> float | None:
    """Seconds to wait before retrying after ``attempt`` (1-based) failed; None when it was the
    last attempt allowed."""
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    if attempt >= policy.max_attempts:
        return None
    base = _capped_base(policy, attempt)
    low = base * (1 - policy.jitter)
    high = min(base * (1 + policy.jitter), policy.max_backoff_seconds)
    # uniform() may round a hair past `high`; the cap is a promise, so clamp both ends.
    return min(max(0.0, rng.uniform(low, high)), high)


def _capped_base(policy: RetryPolicy, attempt: int) -> float:
    if policy.backoff_seconds == 0:
        return 0.0
    # Compare in log space: multiplier**(attempt-1) overflows a float long before attempts run out.
    room = math.log(policy.max_backoff_seconds / policy.backoff_seconds)
    if (attempt - 1) * math.log(policy.multiplier) >= room:
        return policy.max_backoff_seconds
    return min(
        policy.backoff_seconds * policy.multiplier ** (attempt - 1), policy.max_backoff_seconds
    )

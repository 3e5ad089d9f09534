"""Reading an append-only change log by sequence number without missing a late commit.

Sequence numbers are handed out when a row is inserted, but rows become visible when their
transaction commits, so a reader can see 12 before 11. Moving past 11 at once would lose it
forever. The cursor therefore keeps every number it skipped as a *gap* and asks for the gaps
again on each read, until they show up or are older than ``gap_timeout`` seconds (a rolled-back
insert leaves a gap that never fills).

Invariants:
- Each sequence number is reported by :meth:`ChangeCursor.saw` at most once.
- A number below the highest one seen is still reported if it shows up within
  ``gap_timeout`` of being skipped.
- Pure: time comes in as an argument (a monotonic clock's seconds).
"""

from __future__ import annotations

import dataclasses

MAX_GAPS = 10_000
"""Gaps kept at most; beyond that the oldest are given up (a reader far behind)."""


@dataclasses.dataclass
class ChangeCursor:
    high: int
    """The highest sequence number seen (or the start)."""
    gap_timeout: float = 30.0
    gaps: dict[int, float] = dataclasses.field(default_factory=dict)
    """Numbers skipped over, with when they were first missed."""

    def wanted(self) -> tuple[int, list[int]]:
        """What to read next: every number above the first value, and the listed gaps."""
        return self.high, sorted(self.gaps)

    def saw(self, seqs: list[int], now: float) -> list[int]:
        """Take in the numbers just read; those not reported before, in order."""
        fresh: list[int] = []
        for seq in sorted(set(seqs)):
            if seq > self.high:
                for missing in range(self.high + 1, seq):
                    self.gaps[missing] = now
                self.high = seq
                fresh.append(seq)
            elif self.gaps.pop(seq, None) is not None:
                fresh.append(seq)
        self._expire(now)
        return fresh

    def _expire(self, now: float) -> None:
        stale = [g for g, since in self.gaps.items() if now - since > self.gap_timeout]
        for gap in stale:
            del self.gaps[gap]
        if len(self.gaps) > MAX_GAPS:
            for gap in sorted(self.gaps)[: len(self.gaps) - MAX_GAPS]:
                del self.gaps[gap]

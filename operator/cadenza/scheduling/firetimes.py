"""The next fire time of each scheduled Task, in the order they are to be claimed: the
scheduler's heap. Each fire time is claimed its Task's *lead* before it is due.

A crowded tick is claimed in waves. Fire times set with ``spread`` (Tasks whose runs may be
claimed and sent early: Parallel ones without ``maxConcurrent``) are counted per tick. Up to
``Waves.first`` of them keep their own lead. Once a tick has more, all of its fire times are
claimed ``Waves.margin`` earlier (those set before move), and every ``Waves.size`` beyond the
first are claimed ``Waves.gap`` earlier than the ones before, up to
``Waves.max_lead``. So the runs of a tick that many Tasks share are recorded and sent over the
seconds before it, in batches the leader can hand over in time (a wave per gap is the pace it
plans for), and all of them before the tick itself, when the pods start them at once; ticks due
sooner still interleave with them in the heap.

Invariants:
- At most one fire time per Task counts: setting a new one (an edited schedule, or the same tick
  with another lead) or discarding it (a deleted or suspended Task) leaves the old heap entry
  behind as stale, and stale entries are never returned.
- Stale entries do not pile up (:class:`~cadenza.scheduling.keyedheap.KeyedHeap`): memory
  follows the Tasks that exist, not every Task that ever did; a deleted Task's yearly tick does
  not wait a year in the heap.
- A tick's crowd counts only its live spread fire times: taking one off (popped, replaced,
  discarded) counts it out, and a tick nobody waits for any more has no entry.
- A fire time keeps its own lead only while its tick has at most ``Waves.first`` spread ones;
  the moment one more is set, the ones at their own lead move ``Waves.margin`` earlier.
- A tick that reached a crowd of ``Waves.first`` is remembered as crowded until it is well past
  (:meth:`FireTimes.crowded_near`), even as its fire times are claimed.
- Only the event loop touches it: no locks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from cadenza.core.ids import TaskUid
from cadenza.scheduling.keyedheap import KeyedHeap

CROWDED_BEFORE = timedelta(seconds=10)
"""How long before its first wave a crowded tick counts as near: writes made before it are still
being digested then (the API server, kopf's queues of their events). Opened 2 s before the first
wave, the window still saw the API server use 1.6-2.4 times the CPU of a tick without such
writes before it; opened 10 s before, 1.2-1.3 times (docs/benchmark.md)."""
CROWDED_AFTER = timedelta(seconds=15)
"""How long past a crowded tick it still counts as near: the last of 10,000 runs was dispatched
up to 6.6 s after the tick on 2 cores and finished up to 15.6 s after it (docs/benchmark.md)."""


NO_LEAD = timedelta(0)


@dataclass(frozen=True)
class Waves:
    """How a crowded tick's spread fire times are claimed ahead."""

    first: int = 1000
    """Fire times of one tick claimed together at their own lead, unless the tick has more
    (then they move ``margin`` earlier). A thousand is what the leader handed over within the
    usual 0.25 s lead, tick after tick, at 1,000 Tasks every second on 2 cores; spreading those
    over a second before their tick instead made it fall behind there (docs/benchmark.md), so
    only crowds beyond it go in waves."""
    size: int = 250
    """Fire times per further wave."""
    gap: timedelta = timedelta(seconds=0.25)
    """How much earlier each wave is claimed than the one before: ``size`` per ``gap`` is the
    pace of hand-over planned for (1,000 runs a second; the leader records and sends about
    1,300 a second on 2 cores)."""
    max_lead: timedelta = timedelta(seconds=8)
    """No wave is claimed earlier than this before its tick."""
    margin: timedelta = timedelta(seconds=1)
    """How much earlier than their own lead the fire times of a tick with more than ``first``
    are claimed, its first ``first`` too. At the tick the pods start every run they were sent
    ahead at once, which on 2 cores left the leader too little CPU for the runs still to be
    handed over: a 10,000-run tick whose last 1,000 were claimed 0.25 s ahead had its last
    dispatch 2.7-3.6 s after the tick, every earlier wave sent within 50 ms of its claim
    (docs/benchmark.md)."""

    def lead(self, base: timedelta, crowd: int) -> timedelta:
        """The lead of the fire time that finds ``crowd`` others at its tick."""
        if crowd < self.first:
            return base
        return self._earlier(base, self.margin + self.gap * (1 + (crowd - self.first) // self.size))

    def moved(self, base: timedelta) -> timedelta:
        """The lead of a fire time set with ``base`` before its tick had more than ``first``."""
        return self._earlier(base, self.margin)

    def _earlier(self, base: timedelta, by: timedelta) -> timedelta:
        return max(base, min(base + by, self.max_lead))


class FireTimes:
    def __init__(self, waves: Waves | None = None) -> None:
        self._waves = waves or Waves()
        self._next: KeyedHeap[TaskUid, tuple[datetime, datetime]] = KeyedHeap()
        """Each Task's (moment to claim, tick), earliest first."""
        self._spread: set[TaskUid] = set()
        """Tasks whose live fire time counts in its tick's crowd."""
        self._crowd: Counter[datetime] = Counter()
        """Live spread fire times per tick."""
        self._crowded: set[datetime] = set()
        """Ticks that reached a crowd of ``Waves.first``, until well past them."""
        self._own_lead: dict[datetime, set[TaskUid]] = {}
        """Per tick of at most ``Waves.first`` (yet), its spread fire times at their own lead."""

    def __len__(self) -> int:
        """Tasks with a fire time."""
        return len(self._next)

    @property
    def entries(self) -> int:
        """Heap entries, stale ones included."""
        return self._next.entries

    def crowd(self, tick: datetime) -> int:
        """Spread fire times waiting for ``tick``."""
        return self._crowd[tick]

    def get(self, task: TaskUid) -> datetime | None:
        """The Task's next tick."""
        found = self._next.get(task)
        return found[1] if found else None

    def set(
        self, task: TaskUid, tick: datetime, lead: timedelta = NO_LEAD, *, spread: bool = False
    ) -> datetime:
        """The Task's next ``tick``, to be claimed ``lead`` before it (earlier when ``spread``
        and its tick is crowded); the moment it will be claimed."""
        self._count_out(task)
        if spread:
            crowd = self._crowd[tick]
            if crowd < self._waves.first:
                self._own_lead.setdefault(tick, set()).add(task)
            else:
                lead = self._waves.lead(lead, crowd)
                self._move_earlier(tick)
            self._crowd[tick] += 1
            self._spread.add(task)
            if self._crowd[tick] >= self._waves.first:
                self._crowded.add(tick)
        claim_at = tick - lead
        self._push(task, claim_at, tick)
        return claim_at

    def _move_earlier(self, tick: datetime) -> None:
        """``tick`` just got more than ``Waves.first``: those at their own lead move earlier."""
        for task in self._own_lead.pop(tick, ()):
            claim_at = tick - self._waves.moved(tick - self._next[task][0])
            self._push(task, claim_at, tick)

    def _push(self, task: TaskUid, claim_at: datetime, tick: datetime) -> None:
        self._next.set(task, (claim_at, tick))

    def discard(self, task: TaskUid) -> None:
        self._count_out(task)
        self._next.discard(task)

    def crowded_near(self, now: datetime) -> bool:
        """Whether a crowded tick's runs are being claimed, handed over and finished: from
        ``CROWDED_BEFORE`` before the lead of its first wave until ``CROWDED_AFTER`` past it."""
        for tick in list(self._crowded):
            if now > tick + CROWDED_AFTER:
                self._crowded.discard(tick)
            elif now >= tick - self._waves.max_lead - self._waves.gap - CROWDED_BEFORE:
                return True
        return False

    def earliest(self) -> datetime | None:
        """The earliest moment a Task's tick is to be claimed (None: no Task has one)."""
        first = self._next.peek()
        return None if first is None else first[1][0]

    def pop_due(self, horizon: datetime) -> tuple[datetime, TaskUid] | None:
        """The earliest tick to be claimed at or before ``horizon``, with its Task, taken off
        (the caller sets the Task's next one); None when none is due."""
        first = self._next.peek()
        if first is None or first[1][0] > horizon:
            return None
        task, (_, tick) = first
        self._count_out(task)
        self._next.pop()
        return tick, task

    def _count_out(self, task: TaskUid) -> None:
        if task not in self._spread:
            return
        self._spread.discard(task)
        tick = self._next[task][1]
        if (own := self._own_lead.get(tick)) is not None:
            own.discard(task)
            if not own:
                del self._own_lead[tick]
        self._crowd[tick] -= 1
        if self._crowd[tick] <= 0:
            del self._crowd[tick]

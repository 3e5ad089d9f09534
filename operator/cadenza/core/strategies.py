"""Load balancing: which executor pod gets a run, as pure functions of candidates and state.

``pick`` first narrows the candidates to a *pool*, the same way for every strategy:

1. A pod selected by two of the Task's executors counts once, with its preferred entry (lower
   priority number, then higher weight).
2. Priority tiers: the tier with the lowest priority number that still has a candidate outside
   ``exclude`` (the pods a retry wants to avoid, or that just answered 429/503). If excluding
   leaves nothing in any tier, the exclusion is dropped and the preferred tier is used: a retry on
   a one-pod pool should still run. A dispatcher that moves on after 429/503 must therefore bound
   its own attempts (e.g. one round over the candidates) instead of relying on ``None``.
3. Weight 0 means "only as a last resort": such pods are in the pool only when every pod left in
   the tier has weight 0, and then all count as weight 1.

Then the strategy picks from the pool (sorted by name, so input order never matters):

- ``RoundRobin``: an exact cycle in name order. The cursor is the last pod's *name*, so pods
  joining or leaving do not reset it; the next pick is the first name after it (wrapping). A
  Task without a cursor starts at a position hashed from its key, so Tasks do not all start on
  the same pod.
- ``Weighted``: nginx's smooth weighted round robin; the current weights persist per pod.
  Weights 5,1,1 give a a b a c a a: proportional and interleaved, without bursts.
- ``Random``: uniform over the pool, drawn from ``rng``.
- ``Sticky``: weighted rendezvous (highest-random-weight) hashing of ``task_key`` over the pool
  with SHA-256: stable while the pool is unchanged, only the leaving pod's Tasks move when one
  leaves, and about 1/n of Tasks move to a joining pod. Excluding the usual pod picks the
  Task's second choice, so a retry also lands somewhere predictable.
- ``LeastLoaded``: fewest runs in flight per unit of weight (nginx's ``least_conn``); ties go
  round robin among the tied pods with the RoundRobin cursor, so an idle pool spreads work
  instead of always choosing the first name.

Invariants: ``state`` is the JSON-serialisable value persisted in ``load_balance_state`` for the
Task; it is read defensively (a missing or malformed entry is treated as empty) and the returned
state holds only the picking strategy's keys, for the pods still among the candidates.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import math
import random
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any

from cadenza.core.ids import PodName


class Strategy(enum.StrEnum):
    ROUND_ROBIN = "RoundRobin"
    WEIGHTED = "Weighted"
    RANDOM = "Random"
    STICKY = "Sticky"
    LEAST_LOADED = "LeastLoaded"


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A healthy pod that may take the run, with the Task's weight and priority for its
    executor."""

    name: PodName
    executor: str
    weight: int
    priority: int
    in_flight: int

    def __post_init__(self) -> None:
        if self.weight < 0 or self.in_flight < 0:
            raise ValueError(
                f"{self.name}: weight and in_flight must not be negative,"
                f" got {self.weight} and {self.in_flight}"
            )


@dataclasses.dataclass(frozen=True)
class Pick:
    pod: PodName
    state: dict[str, Any]
    """The strategy state to persist for the Task."""


@dataclasses.dataclass(frozen=True)
class _Context:
    pool: list[Candidate]
    known: frozenset[PodName]
    state: Mapping[str, Any]
    task_key: str
    rng: random.Random


def pick(
    strategy: Strategy,
    candidates: Sequence[Candidate],
    state: Mapping[str, Any],
    task_key: str,
    rng: random.Random,
    exclude: frozenset[PodName] = frozenset(),
) -> Pick | None:
    """Choose a pod for one run of the Task; None only when there is no candidate at all."""
    unique = _deduplicate(candidates)
    if not unique:
        return None
    context = _Context(
        pool=_pool(unique, exclude),
        known=frozenset(c.name for c in unique),
        state=state,
        task_key=task_key,
        rng=rng,
    )
    return _CHOOSERS[strategy](context)


def _deduplicate(candidates: Sequence[Candidate]) -> list[Candidate]:
    best: dict[PodName, Candidate] = {}
    for candidate in candidates:
        kept = best.get(candidate.name)
        if kept is None or (candidate.priority, -candidate.weight) < (kept.priority, -kept.weight):
            best[candidate.name] = candidate
    return list(best.values())


def _pool(candidates: list[Candidate], exclude: frozenset[PodName]) -> list[Candidate]:
    allowed = [c for c in candidates if c.name not in exclude] or candidates
    top = min(c.priority for c in allowed)
    tier = [c for c in allowed if c.priority == top]
    weighted = [c for c in tier if c.weight > 0]
    if not weighted:
        weighted = [dataclasses.replace(c, weight=1) for c in tier]
    return sorted(weighted, key=lambda c: c.name)


def _round_robin(context: _Context) -> Pick:
    chosen = _after_cursor(context.pool, context.state, context.task_key)
    return Pick(chosen.name, {"last": chosen.name})


def _weighted(context: _Context) -> Pick:
    stored = context.state.get("current")
    current: dict[str, int] = {}
    if isinstance(stored, Mapping):
        current = {
            name: value
            for name, value in stored.items()
            if isinstance(name, str) and isinstance(value, int) and not isinstance(value, bool)
        }
    total = 0
    for candidate in context.pool:
        current[candidate.name] = current.get(candidate.name, 0) + candidate.weight
        total += candidate.weight
    # max() keeps the first of equals, and the pool is in name order: ties go to the first name.
    chosen = max(context.pool, key=lambda c: current[c.name])
    current[chosen.name] -= total
    kept = {name: value for name, value in current.items() if name in context.known}
    return Pick(chosen.name, {"current": kept})


def _random(context: _Context) -> Pick:
    chosen = context.pool[context.rng.randrange(len(context.pool))]
    return Pick(chosen.name, {})


def _sticky(context: _Context) -> Pick:
    chosen = max(context.pool, key=lambda c: (rendezvous_score(context.task_key, c), c.name))
    return Pick(chosen.name, {"pod": chosen.name})


def _least_loaded(context: _Context) -> Pick:
    lightest = min(Fraction(c.in_flight, c.weight) for c in context.pool)
    tied = [c for c in context.pool if Fraction(c.in_flight, c.weight) == lightest]
    chosen = _after_cursor(tied, context.state, context.task_key)
    return Pick(chosen.name, {"last": chosen.name})


def rendezvous_score(task_key: str, candidate: Candidate) -> float:
    """The candidate's weighted rendezvous score for the key: ``-weight / ln(u)`` with ``u`` in
    (0, 1) drawn from SHA-256 (not ``hash()``, which differs between processes)."""
    digest = hashlib.sha256(f"{task_key}\x00{candidate.name}".encode()).digest()
    # 52 bits plus a half fit a float exactly, so the unit stays strictly inside (0, 1).
    unit = ((int.from_bytes(digest[:8], "big") >> 12) + 0.5) / 2.0**52
    return -candidate.weight / math.log(unit)


def _after_cursor(pool: list[Candidate], state: Mapping[str, Any], task_key: str) -> Candidate:
    last = state.get("last")
    if not isinstance(last, str):
        digest = hashlib.sha256(task_key.encode()).digest()
        return pool[int.from_bytes(digest[:8], "big") % len(pool)]
    for candidate in pool:
        if candidate.name > last:
            return candidate
    return pool[0]


_CHOOSERS: dict[Strategy, Callable[[_Context], Pick]] = {
    Strategy.ROUND_ROBIN: _round_robin,
    Strategy.WEIGHTED: _weighted,
    Strategy.RANDOM: _random,
    Strategy.STICKY: _sticky,
    Strategy.LEAST_LOADED: _least_loaded,
}

"""Load balancing: each strategy's choice, its persisted state, tiers and exclusions."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from cadenza.core.ids import PodName
from cadenza.core.strategies import Candidate, Pick, Strategy, pick


def pod(name: str, weight: int = 1, priority: int = 0, in_flight: int = 0) -> Candidate:
    return Candidate(PodName(name), "workers", weight, priority, in_flight)


def run(
    strategy: Strategy,
    candidates: Sequence[Candidate],
    times: int,
    state: Mapping[str, Any] | None = None,
    task_key: str = "ns/task",
    seed: int = 0,
) -> tuple[list[str], dict[str, Any]]:
    rng = random.Random(seed)
    current: dict[str, Any] = dict(state or {})
    picked: list[str] = []
    for _ in range(times):
        result = pick(strategy, candidates, current, task_key, rng)
        assert result is not None
        picked.append(result.pod)
        current = result.state
    return picked, current


def longest_run(sequence: list[str]) -> int:
    best = length = 0
    for index, item in enumerate(sequence):
        length = length + 1 if index and sequence[index - 1] == item else 1
        best = max(best, length)
    return best


ABC = [pod("c"), pod("a"), pod("b")]


# RoundRobin


def test_round_robin_is_an_exact_cycle_in_name_order() -> None:
    picked, state = run(Strategy.ROUND_ROBIN, ABC, 9, {"last": "a"})
    assert picked == ["b", "c", "a"] * 3
    assert state == {"last": "a"}


def test_round_robin_first_pick_is_spread_by_task_key() -> None:
    firsts = {run(Strategy.ROUND_ROBIN, ABC, 1, task_key=f"ns/task-{i}")[0][0] for i in range(30)}
    assert firsts == {"a", "b", "c"}
    picked, _ = run(Strategy.ROUND_ROBIN, ABC, 6, task_key="ns/x")
    assert sorted(picked[:3]) == ["a", "b", "c"] and picked[3:] == picked[:3]


def test_round_robin_cursor_survives_pods_leaving_and_joining() -> None:
    gone = [pod("a"), pod("c")]
    assert run(Strategy.ROUND_ROBIN, gone, 1, {"last": "b"})[0] == ["c"]
    joined = [*ABC, pod("bb")]
    assert run(Strategy.ROUND_ROBIN, joined, 3, {"last": "b"})[0] == ["bb", "c", "a"]
    assert run(Strategy.ROUND_ROBIN, ABC, 1, {"last": "zzz"})[0] == ["a"]


def test_round_robin_skips_excluded_pods() -> None:
    result = pick(
        Strategy.ROUND_ROBIN, ABC, {"last": "a"}, "k", random.Random(0), frozenset({PodName("b")})
    )
    assert result == Pick(PodName("c"), {"last": "c"})


# Weighted


def test_weighted_gives_nginx_smooth_sequence() -> None:
    picked, _ = run(Strategy.WEIGHTED, [pod("a", 5), pod("b", 1), pod("c", 1)], 14)
    assert picked == list("aabacaa") * 2


@pytest.mark.parametrize(
    "weights",
    [
        {"a": 5, "b": 1, "c": 1},
        {"a": 3, "b": 2, "c": 1},
        {"a": 1, "b": 1},
        {"a": 7, "b": 3, "c": 0, "d": 10},
    ],
)
def test_weighted_shares_are_exact_over_whole_periods(weights: dict[str, int]) -> None:
    total = sum(weights.values())
    candidates = [pod(name, weight) for name, weight in weights.items()]
    picked, state = run(Strategy.WEIGHTED, candidates, total * 100)
    counts = Counter(picked)
    assert {name: counts[name] for name in weights} == {n: w * 100 for n, w in weights.items()}
    json.dumps(state)


def test_weighted_is_smooth() -> None:
    picked, _ = run(Strategy.WEIGHTED, [pod("a", 5), pod("b", 1), pod("c", 1)], 700)
    assert longest_run(picked) <= 4  # plain WRR would send five a's in a row every period
    picked, _ = run(Strategy.WEIGHTED, [pod("a", 1), pod("b", 1), pod("c", 1)], 30)
    assert longest_run(picked) == 1


def test_weighted_continues_from_persisted_state() -> None:
    candidates = [pod("a", 5), pod("b", 1), pod("c", 1)]
    first, state = run(Strategy.WEIGHTED, candidates, 3)
    second, _ = run(Strategy.WEIGHTED, candidates, 4, json.loads(json.dumps(state)))
    assert first + second == list("aabacaa")


def test_weighted_drops_state_of_pods_that_left() -> None:
    _, state = run(Strategy.WEIGHTED, [pod("a", 2), pod("b", 1)], 1)
    assert set(state["current"]) == {"a", "b"}
    _, state = run(Strategy.WEIGHTED, [pod("a", 2)], 1, state)
    assert set(state["current"]) == {"a"}


def test_weight_zero_is_a_last_resort_for_every_strategy() -> None:
    for strategy in Strategy:
        picked, _ = run(strategy, [pod("a", 0), pod("b", 1), pod("c", 0)], 20)
        assert set(picked) == {"b"}, strategy
        picked, _ = run(strategy, [pod("a", 0), pod("b", 0)], 40, seed=5)
        assert set(picked) <= {"a", "b"}, strategy
    picked, _ = run(Strategy.WEIGHTED, [pod("a", 0), pod("b", 0)], 10)
    assert Counter(picked) == {"a": 5, "b": 5}


# Random


def test_random_is_roughly_uniform() -> None:
    candidates = [pod(f"p{i}") for i in range(6)]
    picked, state = run(Strategy.RANDOM, candidates, 6000, seed=11)
    counts = Counter(picked)
    expected = 1000
    chi_square = sum((counts[c.name] - expected) ** 2 / expected for c in candidates)
    assert chi_square < 20.5  # 5 degrees of freedom, p = 0.001
    assert state == {}


def test_random_is_reproducible_with_a_seed_and_ignores_input_order() -> None:
    forward, _ = run(Strategy.RANDOM, ABC, 20, seed=3)
    backward, _ = run(Strategy.RANDOM, list(reversed(ABC)), 20, seed=3)
    assert forward == backward


# Sticky


KEYS = [f"namespace/task-{i}" for i in range(1000)]


def sticky_map(candidates: Sequence[Candidate]) -> dict[str, str]:
    assignments: dict[str, str] = {}
    for key in KEYS:
        result = pick(Strategy.STICKY, candidates, {}, key, random.Random(0))
        assert result is not None
        assignments[key] = result.pod
    return assignments


FIVE = [pod(f"worker-{i}") for i in range(5)]


def test_sticky_is_stable_and_balanced() -> None:
    first = sticky_map(FIVE)
    assert first == sticky_map(list(reversed(FIVE)))
    assert all(150 <= count <= 250 for count in Counter(first.values()).values())
    picked, state = run(Strategy.STICKY, FIVE, 10, task_key="ns/one", seed=9)
    assert len(set(picked)) == 1 and state == {"pod": picked[0]}


def test_sticky_moves_only_the_leaving_pods_tasks() -> None:
    before = sticky_map(FIVE)
    after = sticky_map(FIVE[:2] + FIVE[3:])
    moved = {key for key in KEYS if before[key] != after[key]}
    assert moved == {key for key in KEYS if before[key] == "worker-2"}


def test_sticky_moves_about_one_in_n_to_a_joining_pod() -> None:
    before = sticky_map(FIVE)
    after = sticky_map([*FIVE, pod("worker-5")])
    moved = [key for key in KEYS if before[key] != after[key]]
    assert all(after[key] == "worker-5" for key in moved)
    assert 0.10 < len(moved) / len(KEYS) < 0.24  # ideal 1/6


def test_sticky_excluding_the_usual_pod_gives_the_same_second_choice_as_removing_it() -> None:
    usual = sticky_map(FIVE)
    for key in KEYS[:100]:
        exclude = frozenset({PodName(usual[key])})
        avoided = pick(Strategy.STICKY, FIVE, {}, key, random.Random(0), exclude)
        removed = pick(
            Strategy.STICKY, [c for c in FIVE if c.name not in exclude], {}, key, random.Random(0)
        )
        assert avoided is not None and removed is not None
        assert avoided.pod == removed.pod != usual[key]


def test_sticky_respects_weights() -> None:
    counts = Counter(sticky_map([pod("big", 3), pod("small", 1)]).values())
    assert 0.70 < counts["big"] / len(KEYS) < 0.80


# LeastLoaded


def test_least_loaded_picks_the_fewest_in_flight() -> None:
    candidates = [pod("a", in_flight=3), pod("b", in_flight=1), pod("c", in_flight=2)]
    assert run(Strategy.LEAST_LOADED, candidates, 1)[0] == ["b"]


def test_least_loaded_rotates_through_ties() -> None:
    idle = [pod("a"), pod("b"), pod("c"), pod("d", in_flight=1)]
    picked, state = run(Strategy.LEAST_LOADED, idle, 6, {"last": "a"})
    assert picked == ["b", "c", "a", "b", "c", "a"]
    assert state == {"last": "a"}


def test_least_loaded_counts_load_per_unit_of_weight() -> None:
    candidates = [pod("a", weight=4, in_flight=3), pod("b", weight=1, in_flight=1)]
    assert run(Strategy.LEAST_LOADED, candidates, 1)[0] == ["a"]
    tied = [pod("a", weight=2, in_flight=2), pod("b", weight=1, in_flight=1)]
    assert run(Strategy.LEAST_LOADED, tied, 2, {"last": "a"})[0] == ["b", "a"]


# Pool: tiers, exclusions, duplicates


TIERED = [
    pod("p0-a", priority=0),
    pod("p0-b", priority=0),
    pod("p1-a", priority=1),
    pod("p2-a", priority=2),
]


@pytest.mark.parametrize("strategy", list(Strategy))
def test_lowest_priority_number_tier_is_used_first(strategy: Strategy) -> None:
    picked, _ = run(strategy, TIERED, 20)
    assert set(picked) <= {"p0-a", "p0-b"}


@pytest.mark.parametrize("strategy", list(Strategy))
def test_next_tier_only_when_the_tier_is_excluded(strategy: Strategy) -> None:
    rng = random.Random(0)
    tier0 = frozenset({PodName("p0-a"), PodName("p0-b")})
    result = pick(strategy, TIERED, {}, "k", rng, tier0)
    assert result is not None and result.pod == "p1-a"
    result = pick(strategy, TIERED, {}, "k", rng, tier0 | {PodName("p1-a")})
    assert result is not None and result.pod == "p2-a"


@pytest.mark.parametrize("strategy", list(Strategy))
def test_excluding_everything_falls_back_to_the_preferred_tier(strategy: Strategy) -> None:
    everyone = frozenset(c.name for c in TIERED)
    result = pick(strategy, TIERED, {}, "k", random.Random(0), everyone)
    assert result is not None and result.pod in {"p0-a", "p0-b"}
    single = [pod("only")]
    result = pick(strategy, single, {}, "k", random.Random(0), frozenset({PodName("only")}))
    assert result is not None and result.pod == "only"


@pytest.mark.parametrize("strategy", list(Strategy))
def test_no_candidates_no_pick(strategy: Strategy) -> None:
    assert pick(strategy, [], {"last": "a"}, "k", random.Random(0)) is None


def test_a_pod_in_two_executors_counts_once_with_its_preferred_entry() -> None:
    duplicated = [pod("a", priority=1), pod("b", priority=1), pod("a", priority=0, weight=2)]
    assert set(run(Strategy.ROUND_ROBIN, duplicated, 5)[0]) == {"a"}
    same_tier = [pod("a", 1), pod("a", 3), pod("b", 1)]
    picked, _ = run(Strategy.WEIGHTED, same_tier, 40)
    assert Counter(picked) == {"a": 30, "b": 10}


@pytest.mark.parametrize("strategy", list(Strategy))
@pytest.mark.parametrize(
    "state",
    [
        {},
        {"last": 5},
        {"last": None},
        {"current": "x"},
        {"current": {"a": "x", "b": True, "c": 2.5}},
        {"pod": 1},
    ],
)
def test_malformed_state_is_treated_as_empty(strategy: Strategy, state: dict[str, Any]) -> None:
    result = pick(strategy, ABC, state, "k", random.Random(0))
    assert result is not None and result.pod in {"a", "b", "c"}
    json.dumps(result.state)


@pytest.mark.parametrize("strategy", list(Strategy))
def test_state_is_json_and_mentions_only_current_pods(strategy: Strategy) -> None:
    _, state = run(strategy, [pod("old"), *ABC], 10)
    _, state = run(strategy, ABC, 10, state)
    assert "old" not in json.dumps(state)
    assert json.loads(json.dumps(state)) == state


def test_strategies_are_the_crd_spellings() -> None:
    assert [s.value for s in Strategy] == [
        "RoundRobin",
        "Weighted",
        "Random",
        "Sticky",
        "LeastLoaded",
    ]


@pytest.mark.parametrize(("weight", "in_flight"), [(-1, 0), (1, -1)])
def test_candidate_refuses_negative_numbers(weight: int, in_flight: int) -> None:
    with pytest.raises(ValueError):
        pod("a", weight=weight, in_flight=in_flight)


def test_a_pod_weight_annotation_is_read_and_bounded() -> None:
    from cadenza.kube.views import PodView

    def pod(annotation: str | None) -> PodView:
        meta: dict[str, object] = {"uid": "u", "namespace": "n", "name": "p"}
        if annotation is not None:
            meta["annotations"] = {"cadenza.dev/weight": annotation}
        return PodView.from_body({"metadata": meta, "status": {}})

    assert pod("5").weight == 5
    assert pod("0").weight == 0
    assert pod(None).weight is None
    for bad in ("-1", "1.5", "heavy", "1001", ""):
        assert pod(bad).weight is None

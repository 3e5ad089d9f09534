"""The keyed heap under the leader's fire times, run timers and status queue: one live entry per
key, lowest priority first (ties in the order they were set), and memory that follows the live
entries however many were replaced or dropped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from cadenza.core.ids import ExecutionId
from cadenza.scheduling import keyedheap
from cadenza.scheduling.keyedheap import KeyedHeap
from cadenza.scheduling.timers import Kind, Timers

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def drained(heap: KeyedHeap[str, int]) -> list[tuple[str, int]]:
    out = []
    while (first := heap.pop()) is not None:
        out.append(first)
    return out


def test_lowest_first_ties_in_the_order_set_and_a_key_set_again_counts_once() -> None:
    heap: KeyedHeap[str, int] = KeyedHeap()
    heap.set("a", 5)
    heap.set("b", 1)
    heap.set("c", 5)
    heap.set("a", 5)  # set again, same priority: now after c
    heap.set("d", 9)
    heap.discard("d")
    heap.discard("missing")
    assert len(heap) == 3 and "a" in heap and "d" not in heap
    assert heap["b"] == 1 and heap.get("d") is None
    assert heap.peek() == ("b", 1)
    assert drained(heap) == [("b", 1), ("c", 5), ("a", 5)]
    assert heap.peek() is None and heap.pop() is None and len(heap) == 0


def test_replaced_and_dropped_entries_do_not_pile_up() -> None:
    heap: KeyedHeap[int, int] = KeyedHeap()
    for key in range(10):
        heap.set(key, key)
    for round_ in range(1000):  # replaced again and again, others set and dropped
        heap.set(round_ % 10, 10_000 - round_)
        heap.set(100 + round_, round_)
        heap.discard(100 + round_)
        assert heap.entries <= 2 * len(heap) + keyedheap.SLACK
    assert len(heap) == 10
    assert [key for key, _ in drained(heap)] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]


def test_a_finished_runs_deadline_timer_does_not_stay_until_its_deadline() -> None:
    timers = Timers()
    deadline = NOW + timedelta(seconds=310)
    for n in range(10_000):  # runs sent, each watched until its deadline, each finished at once
        run = ExecutionId(f"run-{n}")
        timers.set(run, Kind.OVERDUE, deadline + timedelta(milliseconds=n))
        timers.clear(run)
    assert len(timers) == 0
    assert timers.entries <= keyedheap.SLACK + 1
    assert timers.next_at() is None and timers.due(deadline + timedelta(days=1)) == []


operations = st.lists(
    st.tuples(
        st.sampled_from(["set", "discard", "pop"]),
        st.integers(0, 8),
        st.integers(-3, 3),
    ),
    max_size=200,
)


@given(operations)
def test_it_answers_as_a_dict_of_live_entries_would(ops: list[tuple[str, int, int]]) -> None:
    heap: KeyedHeap[int, int] = KeyedHeap()
    model: dict[int, tuple[int, int]] = {}  # key -> (priority, when it was set)
    for step, (op, key, priority) in enumerate(ops):
        if op == "set":
            heap.set(key, priority)
            model[key] = (priority, step)
        elif op == "discard":
            heap.discard(key)
            model.pop(key, None)
        else:
            expected = min(model.items(), key=lambda kv: kv[1], default=None)
            popped = heap.pop()
            if expected is None:
                assert popped is None
            else:
                assert popped == (expected[0], expected[1][0])
                del model[expected[0]]
        assert len(heap) == len(model)
        assert dict(heap.items()) == {k: p for k, (p, _) in model.items()}
        assert heap.entries <= 2 * len(model) + keyedheap.SLACK

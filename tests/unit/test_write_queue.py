"""The status writes' queue: two lanes with their own rates, least recently written first, never
one Task twice within the minimum interval, nothing while writing is not allowed."""

from __future__ import annotations

from cadenza.scheduling.writequeue import Lane, WriteQueue


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def queue(clock: Clock, *, runs: float = 2, spec: float = 5, interval: float = 2.0) -> WriteQueue:
    return WriteQueue(
        min_interval=interval, runs_per_second=runs, spec_per_second=spec, clock=clock
    )


def always() -> bool:
    return True


def test_each_lane_is_held_to_its_own_rate() -> None:
    clock = Clock()
    writes = queue(clock)
    for n in range(20):
        writes.touch(f"fired-{n}", Lane.RUNS)
        writes.touch(f"new-{n}", Lane.SPEC)
    first = writes.take(always)
    assert [k for k in first if k.startswith("new")] == [f"new-{n}" for n in range(5)]
    assert [k for k in first if k.startswith("fired")] == ["fired-0", "fired-1"]
    clock.now += 1
    second = writes.take(always)
    assert sum(k.startswith("new") for k in second) == 5
    assert sum(k.startswith("fired") for k in second) == 2
    assert len(writes) == 40 - 14


def test_applied_tasks_do_not_wait_behind_the_firing_ones() -> None:
    """Thousands of firing Tasks waiting on the runs lane: a Task just created is written at
    the next take, and the firing ones keep their rate."""
    clock = Clock()
    writes = queue(clock)
    for n in range(1000):
        writes.touch(f"fired-{n}", Lane.RUNS)
    writes.take(always)
    clock.now += 1
    writes.touch("created", Lane.SPEC)
    assert "created" in writes.take(always)


def test_a_key_waiting_moves_up_to_the_spec_lane_but_never_down() -> None:
    clock = Clock()
    writes = queue(clock, runs=1)
    writes.touch("busy", Lane.RUNS)
    writes.touch("edited", Lane.RUNS)
    writes.touch("edited", Lane.SPEC)
    assert writes.lane_of("edited") is Lane.SPEC
    writes.touch("edited", Lane.RUNS)
    assert writes.lane_of("edited") is Lane.SPEC
    assert writes.take(always) == ["edited", "busy"]
    assert len(writes) == 0
    clock.now += 10
    assert writes.take(always) == [], "the stale runs-lane item of 'edited' is not handed out"


def test_least_recently_written_first_and_never_twice_within_the_interval() -> None:
    clock = Clock()
    writes = queue(clock, runs=100, interval=2.0)
    writes.touch("a", Lane.RUNS)
    assert writes.take(always) == ["a"]
    clock.now += 1
    writes.touch("a", Lane.RUNS)
    writes.touch("b", Lane.RUNS)
    assert writes.take(always) == ["b"], "a was written a second ago"
    clock.now += 1
    assert writes.take(always) == ["a"]
    clock.now += 0.5
    writes.touch("b", Lane.RUNS)
    writes.touch("a", Lane.RUNS)
    clock.now += 2
    assert writes.take(always) == ["b", "a"], "b was written before a"


def test_the_interval_holds_in_the_spec_lane_too() -> None:
    clock = Clock()
    writes = queue(clock)
    writes.touch("t", Lane.SPEC)
    assert writes.take(always) == ["t"]
    writes.touch("t", Lane.SPEC)
    clock.now += 1.5
    assert writes.take(always) == []
    clock.now += 0.5
    assert writes.take(always) == ["t"]


def test_nothing_is_handed_out_while_writing_is_not_allowed() -> None:
    clock = Clock()
    writes = queue(clock)
    writes.touch("a", Lane.SPEC)
    writes.touch("b", Lane.RUNS)
    assert writes.take(lambda: False) == []
    assert len(writes) == 2
    assert sorted(writes.take(always)) == ["a", "b"]


def test_a_forgotten_key_is_not_handed_out_and_starts_afresh() -> None:
    clock = Clock()
    writes = queue(clock)
    writes.touch("gone", Lane.SPEC)
    writes.touch("kept", Lane.RUNS)
    writes.forget("gone")
    assert writes.take(always) == ["kept"]
    writes.touch("gone", Lane.RUNS)
    assert writes.take(always) == ["gone"], "a Task created again under the same key"


def test_an_idle_lane_saves_no_more_than_one_second_of_writes() -> None:
    clock = Clock()
    writes = queue(clock, runs=2)
    clock.now += 3600
    for n in range(10):
        writes.touch(n, Lane.RUNS)
    assert len(writes.take(always)) == 2


def test_while_the_fire_path_is_busy_both_lanes_share_the_runs_lanes_budget() -> None:
    """A crowded tick is being handed over: status writes go no faster than firing alone would
    have them, applied Tasks' first; nothing starves, and the spec lane's budget saved up
    meanwhile is one second's worth."""
    clock = Clock()
    writes = queue(clock, runs=2, spec=50)
    for n in range(100):
        writes.touch(f"new-{n}", Lane.SPEC)
        writes.touch(f"fired-{n}", Lane.RUNS)
    assert writes.take(always, busy=True) == ["new-0", "new-1"]
    clock.now += 1
    assert writes.take(always, busy=True) == ["new-2", "new-3"]
    clock.now += 10
    after = writes.take(always)
    assert sum(k.startswith("new") for k in after) == 50
    assert sum(k.startswith("fired") for k in after) == 2


def test_what_waits_is_counted_per_lane() -> None:
    clock = Clock()
    writes = queue(clock, runs=1, spec=1)
    for key in ("a", "b", "c"):
        writes.touch(key, Lane.RUNS)
    writes.touch("b", Lane.SPEC)
    writes.touch("d", Lane.SPEC)
    assert (writes.waiting(Lane.SPEC), writes.waiting(Lane.RUNS)) == (2, 2)
    writes.forget("d")
    writes.forget("never")
    assert (writes.waiting(Lane.SPEC), writes.waiting(Lane.RUNS)) == (1, 2)
    assert writes.take(always) == ["b", "a"]
    assert (writes.waiting(Lane.SPEC), writes.waiting(Lane.RUNS)) == (0, 1)
    assert len(writes) == 1

"""The scheduler's heap spreads a crowded tick's claims over waves ahead of it, and counts each
Task at one tick only while its fire time is live."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from cadenza.core.ids import TaskUid
from cadenza.scheduling.firetimes import CROWDED_AFTER, CROWDED_BEFORE, FireTimes, Waves

TICK = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
BASE = timedelta(seconds=0.25)


def uid(i: int) -> TaskUid:
    return TaskUid(f"uid-{i}")


def leads(times: FireTimes, count: int, tick: datetime = TICK) -> Counter[float]:
    """The leads ``count`` fire times get as they are set."""
    return Counter(
        (tick - times.set(uid(i), tick, BASE, spread=True)).total_seconds() for i in range(count)
    )


def claimed_leads(times: FireTimes, tick: datetime = TICK) -> Counter[float]:
    """How long before ``tick`` its fire times are claimed now, those moved since they were set
    included."""
    return Counter(
        (tick - claim_at).total_seconds() for _, (claim_at, at) in times._next.items() if at == tick
    )


NO_MARGIN = timedelta(0)


def test_each_wave_is_a_gap_earlier_up_to_the_longest_lead() -> None:
    times = FireTimes(
        Waves(first=500, size=250, gap=BASE, max_lead=timedelta(seconds=1), margin=NO_MARGIN)
    )
    assert leads(times, 2000) == {0.25: 500, 0.5: 250, 0.75: 250, 1.0: 1000}
    assert times.crowd(TICK) == 2000


def test_the_default_waves_leave_a_thousand_at_a_tick_alone() -> None:
    times = FireTimes()
    assert leads(times, 1000) == {0.25: 1000}
    assert claimed_leads(times) == {0.25: 1000}, "a thousand are not a crowd: none moves"
    times = FireTimes()
    leads(times, 10_000)
    assert claimed_leads(times) == {
        1.25: 1000,
        **{1.25 + 0.25 * wave: 250 for wave in range(1, 27)},
        8.0: 2500,
    }


def test_a_crowded_tick_is_all_claimed_a_margin_earlier_the_first_ones_too() -> None:
    """Its pods start every run they hold at the tick: the last wave is handed over before."""
    times = FireTimes(Waves(first=3, size=2, gap=BASE, max_lead=timedelta(seconds=8)))
    assert leads(times, 3) == {0.25: 3}
    assert claimed_leads(times) == {0.25: 3}
    later = TICK + timedelta(minutes=1)  # another tick's fire times stay where they are
    times.set(uid(90), later, BASE, spread=True)
    times.set(uid(91), later, BASE)
    assert (TICK - times.set(uid(3), TICK, BASE, spread=True)).total_seconds() == 1.5
    assert claimed_leads(times) == {1.25: 3, 1.5: 1}
    assert claimed_leads(times, later) == {0.25: 2}
    assert (TICK - times.set(uid(4), TICK, BASE, spread=True)).total_seconds() == 1.5
    assert (TICK - times.set(uid(5), TICK, BASE, spread=True)).total_seconds() == 1.75
    # They come out in the order of their new moments, each once.
    order = []
    while (found := times.pop_due(TICK)) is not None:
        order.append(found[1])
    assert order[:3] == [uid(5), uid(3), uid(4)] and len(order) == 6
    assert set(order[3:]) == {uid(0), uid(1), uid(2)}
    assert later in times._own_lead and TICK not in times._own_lead


def test_a_crowd_that_shrinks_and_grows_again_moves_only_what_is_at_its_own_lead() -> None:
    times = FireTimes(Waves(first=2, size=1, gap=BASE, max_lead=timedelta(seconds=8)))
    leads(times, 3)  # uid(2) crowds the tick: uid(0) and uid(1) move a margin earlier
    times.discard(uid(0))
    times.discard(uid(2))
    assert claimed_leads(times) == {1.25: 1}
    assert (TICK - times.set(uid(7), TICK, BASE, spread=True)).total_seconds() == 0.25
    times.set(uid(8), TICK, BASE, spread=True)
    assert claimed_leads(times) == {1.25: 2, 1.5: 1}, "uid(1) is not moved twice"
    times.discard(uid(1))
    times.discard(uid(7))
    times.discard(uid(8))
    assert not times._own_lead and not times._crowd


def test_few_tasks_at_a_tick_and_unspread_ones_keep_their_lead() -> None:
    times = FireTimes(
        Waves(first=250, size=250, gap=BASE, max_lead=timedelta(seconds=8), margin=NO_MARGIN)
    )
    assert leads(times, 250) == {0.25: 250}
    for i in range(1000, 1600):  # Tasks of other modes: never spread, never counted
        assert times.set(uid(i), TICK, BASE) == TICK - BASE
    assert times.crowd(TICK) == 250
    assert (TICK - times.set(uid(2000), TICK, BASE, spread=True)).total_seconds() == 0.5


def test_a_lead_longer_than_the_longest_stays() -> None:
    times = FireTimes(Waves(max_lead=timedelta(seconds=0.25)))
    assert times.set(uid(1), TICK, timedelta(seconds=2), spread=True) == TICK - timedelta(seconds=2)
    crowded = FireTimes(Waves(first=1, max_lead=timedelta(seconds=0.25)))
    leads(crowded, 3)
    assert claimed_leads(crowded) == {0.25: 3}, "no margin beyond the longest lead"


def test_a_task_counts_at_its_tick_only_while_it_waits_for_it() -> None:
    times = FireTimes(Waves(first=2, size=2, gap=BASE, max_lead=timedelta(seconds=8)))
    leads(times, 4)
    assert times.crowd(TICK) == 4
    times.discard(uid(0))
    later = TICK + timedelta(minutes=1)
    times.set(uid(1), later, BASE, spread=True)  # moved to another tick
    times.set(uid(2), TICK, BASE)  # no longer spread
    assert (times.crowd(TICK), times.crowd(later)) == (1, 1)
    assert times.pop_due(TICK) == (TICK, uid(3))
    assert times.crowd(TICK) == 0
    assert times.pop_due(TICK) == (TICK, uid(2))
    assert times.pop_due(TICK) is None
    # A tick nobody waits for leaves nothing behind.
    assert TICK not in times._crowd
    assert times.pop_due(later) == (later, uid(1))
    assert not times._crowd and not times._spread


def test_claims_come_out_in_the_order_of_their_moment() -> None:
    times = FireTimes(
        Waves(first=1, size=1, gap=BASE, max_lead=timedelta(seconds=8), margin=NO_MARGIN)
    )
    leads(times, 3)  # claimed at 0.25, 0.5 and 0.75 s ahead: the last set comes first
    soon = TICK + timedelta(seconds=1)
    times.set(uid(9), soon, timedelta(seconds=2))  # claimed 1.0 s before TICK
    order = []
    while (found := times.pop_due(TICK)) is not None:
        order.append(found[1])
    assert order == [uid(9), uid(2), uid(1), uid(0)]


def test_a_crowded_tick_counts_as_near_from_its_first_wave_until_well_past_it() -> None:
    """The status book writes applied Tasks' statuses slower meanwhile: from ``CROWDED_BEFORE``
    before the first wave's lead (a gap before the longest) until ``CROWDED_AFTER`` past the
    tick, also once its runs are all claimed."""
    times = FireTimes(Waves(first=3, size=1, gap=BASE, max_lead=timedelta(seconds=2)))
    leads(times, 3)
    second = timedelta(seconds=1)
    first_wave = TICK - 2 * second - BASE
    assert not times.crowded_near(first_wave - CROWDED_BEFORE - second)
    assert times.crowded_near(first_wave - CROWDED_BEFORE)
    while times.pop_due(TICK) is not None:
        pass
    assert times.crowd(TICK) == 0
    assert times.crowded_near(TICK + CROWDED_AFTER)
    assert not times.crowded_near(TICK + CROWDED_AFTER + second)
    assert not times.crowded_near(TICK), "a tick well past is forgotten"


def test_a_tick_below_the_first_wave_and_unspread_tasks_are_not_crowded() -> None:
    times = FireTimes(Waves(first=3, size=1, gap=BASE, max_lead=timedelta(seconds=2)))
    leads(times, 2)
    for i in range(100, 110):
        times.set(uid(i), TICK, BASE)
    assert not times.crowded_near(TICK)

"""Row ids written into a statement: each once, ascending, never an empty ``IN ()``."""

from __future__ import annotations

from cadenza.store import sqltext


def test_ids_are_listed_once_in_ascending_order() -> None:
    # Ascending is the order every batch locks its rows in, so two batches never wait on each
    # other in a circle.
    assert sqltext.ids([30, 7, 30, 12]) == "7, 12, 30"


def test_no_ids_match_nothing() -> None:
    assert sqltext.ids([]) == "NULL"


def test_ids_from_a_generator_are_read_once() -> None:
    assert sqltext.ids(run for run in (2, 1)) == "1, 2"

"""Batches applied together are answered apart: each request gets its own items' answers, in
order (``callback_batches.split``)."""

from __future__ import annotations

import pytest

from cadenza.api.callback_batches import split


def test_answers_go_back_to_their_requests_in_order() -> None:
    assert split(["a", "b", "c", "d"], [1, 0, 3]) == [["a"], [], ["b", "c", "d"]]


def test_nothing_for_no_request() -> None:
    assert split([], []) == []


@pytest.mark.parametrize("sizes", [[1, 1], [2, 2]])
def test_answers_that_do_not_match_the_items_are_an_error(sizes: list[int]) -> None:
    with pytest.raises(ValueError, match="answers for"):
        split(["a", "b", "c"], sizes)

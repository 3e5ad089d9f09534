"""SQL text built for the store's batches: row ids each once and ascending, never an empty
``IN ()``; multi-row inserts split into statements a server accepts whatever the batch's size."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cadenza.store import sqltext

HEAD = "INSERT INTO t (a) VALUES "


def test_ids_are_listed_once_in_ascending_order() -> None:
    # Ascending is the order every batch locks its rows in, so two batches never wait on each
    # other in a circle.
    assert sqltext.ids([30, 7, 30, 12]) == "7, 12, 30"


def test_no_ids_match_nothing() -> None:
    assert sqltext.ids([]) == "NULL"


def test_ids_from_a_generator_are_read_once() -> None:
    assert sqltext.ids(run for run in (2, 1)) == "1, 2"


def test_rows_that_fit_go_in_one_statement() -> None:
    assert sqltext.statements(HEAD, ["(1)", "(2)"], limit=1000) == [HEAD + "(1), (2)"]


def test_no_rows_send_no_statement() -> None:
    assert sqltext.statements(HEAD, [], limit=1000) == []


def test_a_row_longer_than_the_limit_goes_alone() -> None:
    big = "(" + "x" * 100 + ")"
    assert sqltext.statements(HEAD, ["(1)", big, "(2)"], limit=50) == [
        HEAD + "(1)",
        HEAD + big,
        HEAD + "(2)",
    ]


@given(
    lengths=st.lists(st.integers(min_value=1, max_value=300), max_size=60),
    limit=st.integers(min_value=len(HEAD) + 1, max_value=2000),
)
def test_every_row_is_sent_once_in_order_within_the_limit(lengths: list[int], limit: int) -> None:
    rows = [f"({i}:{'x' * n})" for i, n in enumerate(lengths)]
    sent = sqltext.statements(HEAD, rows, limit)
    assert all(statement.startswith(HEAD) for statement in sent)
    bodies = [statement.removeprefix(HEAD).split(", ") for statement in sent]
    assert [row for body in bodies for row in body] == rows
    assert all(len(s) <= limit or len(b) == 1 for s, b in zip(sent, bodies, strict=True))

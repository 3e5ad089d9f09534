"""What pods send is fitted to what the history holds: texts cut with a marker, results too
large replaced by a note, exit codes outside 32 bits dropped."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cadenza.core import texts
from cadenza.core.runs import Outcome
from cadenza.core.transitions import RunStatus


@given(st.text(max_size=3000), st.integers(200, 4000))
def test_a_fitted_text_is_within_its_bytes_and_keeps_what_fits(text: str, limit: int) -> None:
    fitted = texts.fit_text(text, limit)
    assert fitted is not None and len(fitted.encode("utf-8", errors="replace")) <= limit
    if len(text.encode("utf-8", errors="replace")) <= limit:
        assert fitted == text
    else:
        assert "cut to fit" in fitted


def test_short_texts_and_none_pass_untouched() -> None:
    assert texts.fit_text(None) is None
    assert texts.fit_text("exit 1") == "exit 1"


def test_a_result_too_large_becomes_a_note_with_its_head() -> None:
    small = {"n": [1, 2, 3]}
    assert texts.fit_result(small, 100) is small
    note = texts.fit_result({"s": "x" * 500}, 100)
    assert note == {"truncated": True, "bytes": 508, "preview": '{"s":"' + "x" * 500 + '"}'}
    assert texts.fit_result("y" * 10, 100) == "y" * 10
    assert texts.fit_result(12, 1) == 12


def test_exit_codes_outside_32_bits_are_dropped() -> None:
    assert [texts.fit_exit_code(c) for c in (None, 0, -1, 2**31 - 1)] == [None, 0, -1, 2**31 - 1]
    assert texts.fit_exit_code(2**31) is None and texts.fit_exit_code(-(2**31) - 1) is None


def test_an_outcome_is_fitted_whoever_builds_it() -> None:
    outcome = Outcome(RunStatus.FAILED, error="e" * 100_000, exit_code=2**63)
    assert outcome.error is not None and len(outcome.error) <= texts.MAX_ERROR_BYTES
    assert outcome.exit_code is None

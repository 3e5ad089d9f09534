"""Issue 9's layout rule, kept: the leader's run pipeline (``cadenza.scheduling``) is small parts
with one job each, none over 400 lines. A part that grows past it is split, not waived."""

from __future__ import annotations

from pathlib import Path

SCHEDULING = Path(__file__).resolve().parents[2] / "operator" / "cadenza" / "scheduling"
LIMIT = 400


def test_no_module_of_the_run_pipeline_is_over_400_lines() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in SCHEDULING.glob("*.py")}
    assert sizes, "no modules found"
    assert {name: n for name, n in sizes.items() if n > LIMIT} == {}

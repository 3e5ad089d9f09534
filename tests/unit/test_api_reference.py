"""``docs/api.md``'s reference is the OpenAPI document rendered: it cannot drift from the models
that validate requests."""

from __future__ import annotations

from pathlib import Path

import pytest

from cadenza.api import reference

PAGE = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_the_reference_in_docs_api_md_is_current() -> None:
    assert reference.main(["--check", str(PAGE)]) == 0, (
        "docs/api.md is out of date: run python -m cadenza.api.reference docs/api.md"
    )


def test_every_route_and_model_is_in_the_reference() -> None:
    text = reference.render()
    doc = reference.document()
    for path in doc["paths"]:
        if not path.startswith("/api/v1/namespaces/"):
            assert f"`{path}`" in text
    for model in doc["components"]["schemas"]:
        assert f"#### {model}\n" in text


def test_the_page_keeps_what_is_around_the_reference() -> None:
    page = f"# Title\n\nprose\n\n{reference.BEGIN}\nold\n{reference.END}\n\n## After\n"
    again = reference.rewrite(page, "new\n")
    assert again == f"# Title\n\nprose\n\n{reference.BEGIN}\nnew\n{reference.END}\n\n## After\n"
    appended = reference.rewrite("# Title\n", "new\n")
    assert appended.endswith(f"{reference.BEGIN}\nnew\n{reference.END}\n")
    with pytest.raises(ValueError):
        reference.rewrite(f"{reference.BEGIN}\nno end", "new\n")

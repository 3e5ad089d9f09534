"""The running API against its own OpenAPI document, fuzzed by schemathesis: no request built
from the document (valid or not) gets a 500, and every answer is one the document describes
(status code, content type, body schema).

Bounded: a few dozen examples per operation and generation mode, so the whole run stays within
a few minutes. The fuzz creates, changes, triggers and deletes Tasks in its module's namespace
only. (Driven by Hypothesis directly: schemathesis's pytest plugin does not run under pytest 9.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import Api

EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def operations(api: Api) -> dict[str, Any]:
    loaded = schemathesis.openapi.from_url(f"{api.url}/api/v1/openapi.json")
    found = {}
    for result in loaded.get_all_operations():
        operation = result.ok()
        found[operation.label] = operation
    return found


def fuzzer(
    api: Api, operation: Any, mode: schemathesis.GenerationMode, answered: list[int]
) -> Callable[[], None]:
    """A Hypothesis test of one operation; each answer's status goes to ``answered``."""
    headers = {"Authorization": f"Bearer {api.token}"}

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def fuzz(case: Any) -> None:
        response = case.call_and_validate(
            base_url=api.url, headers=headers, checks=CHECKS, timeout=30
        )
        answered.append(response.status_code)

    return fuzz  # type: ignore[no-any-return]


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE,
                                  schemathesis.GenerationMode.NEGATIVE])  # fmt: skip
def test_every_answer_is_one_the_document_describes(
    api: Api, mode: schemathesis.GenerationMode
) -> None:
    found = operations(api)
    assert found, "the document lists no operation"
    answered: dict[str, list[int]] = {}
    for label, operation in sorted(found.items()):
        try:
            fuzzer(api, operation, mode, answered.setdefault(label, []))()
        except Exception as exc:
            raise AssertionError(f"{label} ({mode.value}): {exc}") from exc
    # Every operation was called, and more than once (a fuzz that sends nothing passes too).
    assert all(len(codes) > 1 for codes in answered.values()), answered

"""The dispatch token as stored in a Secret: what is accepted, how refusals read, and how long
the token before a rotation is still offered."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from cadenza.dispatch.credentials import DispatchToken
from cadenza.executors.spec import TokenRef
from cadenza.executors.tokens import Credentials, TokenSource, TokenUnavailable, decode_token
from cadenza.kube.views import ExecutorView

WHERE = "Secret team-a/workers-token (spec.tokenSecretRef)"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_the_token_is_decoded_and_a_trailing_newline_dropped() -> None:
    data = {"token": b64("s3cr3t\n")}
    assert decode_token(WHERE, data, TokenRef("workers-token")) == "s3cr3t"


def test_a_missing_key_names_the_keys_present_and_the_fix() -> None:
    with pytest.raises(TokenUnavailable) as refused:
        decode_token(WHERE, {"password": b64("x")}, TokenRef("workers-token", "token"))
    assert refused.value.permanent
    assert str(refused.value) == (
        f"{WHERE} has no key 'token' (keys: password); set spec.tokenSecretRef.key"
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [("not base64!", "is not base64 of UTF-8 text"), (b64("  \n"), "is empty")],
)
def test_an_unusable_value_is_refused(value: str, problem: str) -> None:
    with pytest.raises(TokenUnavailable, match=problem):
        decode_token(WHERE, {"token": value}, TokenRef("workers-token"))


def test_the_previous_token_is_offered_only_within_the_grace_after_its_rotation() -> None:
    rotated = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    found = Credentials("new", "old", rotated)

    assert found.offered(rotated + timedelta(seconds=299), 300) == DispatchToken("new", "old")
    assert found.offered(rotated + timedelta(seconds=300), 300) == DispatchToken("new")
    assert Credentials("new").offered(rotated, 300) == DispatchToken("new")
    assert "old" not in repr(found.offered(rotated, 300))  # never a token in a log line


class _Secrets:
    """Stands in for the API server's Secrets: one token for every Executor."""

    def ensure(self, namespace: str, executor: str, uid: str, rotation: str | None) -> dict:
        return {"token": b64(f"token-of-{executor}")}


async def test_a_deleted_executors_token_is_not_kept() -> None:
    source = TokenSource(None)  # type: ignore[arg-type]
    source._secrets = _Secrets()  # type: ignore[assignment]
    views = [
        ExecutorView(
            uid=f"uid-{i}",
            namespace="team-a",
            name=f"pool-{i}",
            generation=1,
            spec={},
            spec_hash="h",
        )
        for i in range(50)
    ]
    for view in views:
        assert (await source.token(view)).current == f"token-of-{view.name}"
    for view in views:
        source.forget(view)
    assert (source._cache, source._locks, source._stale) == ({}, {}, set())

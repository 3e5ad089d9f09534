"""Failpoints (tests only): what ``CADENZA_FAILPOINTS`` accepts, and that a bad value stops the
start naming the setting instead of being ignored."""

from __future__ import annotations

import pytest

from cadenza import failpoints
from cadenza.settings import Settings, SettingsError

BASE = {"CADENZA_INSTANCE_ID": "r1"}


def test_unset_arms_nothing() -> None:
    assert Settings.from_env(BASE).failpoints == {}


def test_points_with_and_without_a_pass() -> None:
    spec = "after-claim=3, after-dispatch"
    assert Settings.from_env({**BASE, "CADENZA_FAILPOINTS": spec}).failpoints == {
        "after-claim": 3,
        "after-dispatch": 1,
    }


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("after-lunch", "unknown failpoint 'after-lunch'"),
        ("after-claim=0", "positive integer"),
        ("after-claim=-2", "positive integer"),
        ("after-claim=soon", "positive integer"),
    ],
)
def test_a_bad_value_is_refused_naming_the_setting(spec: str, says: str) -> None:
    with pytest.raises(SettingsError, match="CADENZA_FAILPOINTS") as refused:
        Settings.from_env({**BASE, "CADENZA_FAILPOINTS": spec})
    assert says in str(refused.value)


def test_an_armed_point_counts_its_passes_and_an_unarmed_one_does_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    killed: list[int] = []
    monkeypatch.setattr(failpoints.os, "kill", lambda pid, sig: killed.append(sig))
    failpoints.arm({"after-claim": 2})
    try:
        failpoints.reached("after-dispatch")
        failpoints.reached("after-claim")
        assert killed == []
        failpoints.reached("after-claim")
        assert len(killed) == 1
        failpoints.reached("after-claim")  # once only
        assert len(killed) == 1
    finally:
        failpoints.arm({})

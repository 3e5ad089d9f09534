"""The review cache and the API settings, without I/O: answers expire after the TTL, the cache
never holds more than its size, and a TTL of 0 keeps nothing."""

from __future__ import annotations

import pytest

from cadenza.api.auth import TtlCache
from cadenza.settings import Settings, SettingsError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_answer_expires_after_the_ttl() -> None:
    clock = Clock()
    cache: TtlCache[bool] = TtlCache(5.0, 10, clock)
    cache.put("k", True)
    clock.now = 4.9
    assert cache.get("k") is True
    clock.now = 5.0
    assert cache.get("k") is not True
    assert len(cache) == 0


def test_the_least_recently_used_answer_goes_first() -> None:
    cache: TtlCache[int] = TtlCache(60.0, 2, Clock())
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache.put("c", 3)
    assert len(cache) == 2
    assert cache.get("b") not in (1, 2, 3)
    assert (cache.get("a"), cache.get("c")) == (1, 3)


def test_a_ttl_of_zero_keeps_nothing() -> None:
    cache: TtlCache[bool] = TtlCache(0.0, 10, Clock())
    cache.put("k", True)
    assert len(cache) == 0


def test_api_settings_defaults_follow_the_watched_namespaces() -> None:
    assert Settings.from_env({}).api.default_namespace == "default"
    watched = Settings.from_env({"CADENZA_NAMESPACES": "team-a,team-b"})
    assert watched.api.default_namespace == "team-a"
    chosen = Settings.from_env(
        {"CADENZA_NAMESPACES": "team-a", "CADENZA_API_DEFAULT_NAMESPACE": "team-b"}
    )
    assert chosen.api.default_namespace == "team-b"
    assert Settings.from_env({}).api.auth_cache_seconds == 5.0


@pytest.mark.parametrize(
    "env",
    [{"CADENZA_API_AUTH_CACHE_SECONDS": "-1"}, {"CADENZA_API_MAX_BODY_BYTES": "lots"}],
)
def test_bad_api_settings_fail_at_start(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        Settings.from_env(env)

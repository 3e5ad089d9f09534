"""Operator settings: every variable is read, validated with a message naming it, and documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cadenza.settings import DEFAULT_DATABASE_URL, Settings, SettingsError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
SOURCE = Path(__file__).resolve().parents[2] / "operator" / "cadenza" / "settings"


def test_defaults_are_the_original_systems() -> None:
    settings = Settings.from_env({})
    assert settings.database.url == DEFAULT_DATABASE_URL
    assert DEFAULT_DATABASE_URL == "mysql+pymysql://root:123456@127.0.0.1:3306/jobs"
    assert settings.http.port == 8080
    assert settings.leadership.lease_seconds == 15
    assert settings.kube.namespaces == ()


def test_values_are_read() -> None:
    settings = Settings.from_env(
        {
            "CADENZA_HTTP_PORT": "9000",
            "CADENZA_NAMESPACES": "a, b,,c",
            "CADENZA_LEASE_SECONDS": "9",
            "CADENZA_INSTANCE_ID": "r1",
            "CADENZA_STATUS_MIN_INTERVAL_SECONDS": "0.5",
            "CADENZA_SEND_AHEAD_SECONDS": "0.4",
            "CADENZA_LOG_LEVEL": "debug",
        }
    )
    assert settings.http.port == 9000
    assert settings.http.advertise_url == "http://127.0.0.1:9000"
    assert settings.kube.namespaces == ("a", "b", "c")
    assert settings.leadership.lease_seconds == 9
    assert settings.instance_id == "r1"
    assert settings.scheduling.status_min_interval_seconds == 0.5
    assert settings.scheduling.send_ahead_seconds == 0.4
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CADENZA_HTTP_PORT": "eighty"}, "CADENZA_HTTP_PORT"),
        ({"CADENZA_DATABASE_URL": "notaurl"}, "CADENZA_DATABASE_URL"),
        ({"CADENZA_DATABASE_URL": "postgresql://u:p@h/db"}, "CADENZA_DATABASE_URL"),
        ({"CADENZA_HTTP_PORT": "0"}, "CADENZA_HTTP_PORT"),
        ({"CADENZA_HTTP_PORT": "70000"}, "CADENZA_HTTP_PORT"),
        ({"CADENZA_LEASE_SECONDS": "1"}, "CADENZA_LEASE_SECONDS"),
        (
            {"CADENZA_LEASE_SECONDS": "5", "CADENZA_ACQUIRE_TIMEOUT_SECONDS": "5"},
            "CADENZA_ACQUIRE_TIMEOUT_SECONDS",
        ),
        ({"CADENZA_DATABASE_POOL_SIZE": "-1"}, "CADENZA_DATABASE_POOL_SIZE"),
        ({"CADENZA_THREAD_POOL_SIZE": "1.5"}, "CADENZA_THREAD_POOL_SIZE"),
        ({"CADENZA_MAX_CLOCK_SKEW_SECONDS": "nan-ish"}, "CADENZA_MAX_CLOCK_SKEW_SECONDS"),
        ({"CADENZA_CALLBACK_GRACE_SECONDS": "nan"}, "CADENZA_CALLBACK_GRACE_SECONDS"),
        ({"CADENZA_DEADLINE_GRACE_SECONDS": "NaN"}, "CADENZA_DEADLINE_GRACE_SECONDS"),
        ({"CADENZA_API_AUTH_CACHE_SECONDS": "inf"}, "CADENZA_API_AUTH_CACHE_SECONDS"),
        ({"CADENZA_STATUS_MIN_INTERVAL_SECONDS": "0"}, "CADENZA_STATUS_MIN_INTERVAL_SECONDS"),
        ({"CADENZA_DEADLINE_GRACE_SECONDS": "-3"}, "CADENZA_DEADLINE_GRACE_SECONDS"),
        ({"CADENZA_SEND_AHEAD_SECONDS": "0"}, "CADENZA_SEND_AHEAD_SECONDS"),
        ({"CADENZA_SEND_AHEAD_SECONDS": "soon"}, "CADENZA_SEND_AHEAD_SECONDS"),
        (
            {
                "CADENZA_WEBHOOK_CERT_FILE": "/nonexistent.pem",
                "CADENZA_WEBHOOK_KEY_FILE": "/nonexistent.key",
            },
            "CADENZA_WEBHOOK_CERT_FILE",
        ),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)


def test_every_variable_is_documented() -> None:
    source = "\n".join(module.read_text() for module in sorted(SOURCE.glob("*.py")))
    read = set(re.findall(r'"(CADENZA_[A-Z_]+)"', source))
    documented = set(re.findall(r"`(CADENZA_[A-Z_]+)`", DOCS.read_text()))
    assert read, "no variables found in cadenza/settings/"
    assert read <= documented, f"undocumented: {sorted(read - documented)}"

"""An Executor's spec as the leader reads it: CRD defaults for whatever is missing."""

from __future__ import annotations

from cadenza.core.health import HealthThresholds
from cadenza.executors.spec import HealthCheck, TokenRef, parse_spec


def test_an_empty_spec_takes_every_default_of_the_crd() -> None:
    spec = parse_spec({"selector": {"matchLabels": {"app": "w"}}})
    assert (spec.port, spec.scheme, spec.max_concurrency_per_pod) == (9090, "http", 4)
    assert spec.health_check == HealthCheck("/healthz", 10.0, 2.0, 3, 1)
    assert spec.health_check.thresholds == HealthThresholds(3, 1)
    assert spec.token_ref is None


def test_given_fields_are_used() -> None:
    spec = parse_spec(
        {
            "port": 8443,
            "scheme": "https",
            "maxConcurrencyPerPod": 16,
            "healthCheck": {"path": "/ready", "periodSeconds": 5, "timeoutSeconds": 1,
                            "failureThreshold": 2, "successThreshold": 2},
            "tokenSecretRef": {"name": "workers-token", "key": "dispatch"},
        }
    )  # fmt: skip
    assert (spec.port, spec.scheme, spec.max_concurrency_per_pod) == (8443, "https", 16)
    assert spec.health_check == HealthCheck("/ready", 5.0, 1.0, 2, 2)
    assert spec.token_ref == TokenRef("workers-token", "dispatch")


def test_the_token_key_defaults_to_token() -> None:
    assert parse_spec({"tokenSecretRef": {"name": "t"}}).token_ref == TokenRef("t", "token")


def test_a_probe_never_outlives_its_period() -> None:
    check = parse_spec({"healthCheck": {"periodSeconds": 1, "timeoutSeconds": 5}}).health_check
    assert check.timeout_seconds == 1.0


def test_the_base_url_brackets_ipv6_addresses() -> None:
    spec = parse_spec({})
    assert spec.base_url("10.0.0.7") == "http://10.0.0.7:9090"
    assert spec.base_url("fd00::7") == "http://[fd00::7]:9090"

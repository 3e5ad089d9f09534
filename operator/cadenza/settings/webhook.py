"""``CADENZA_WEBHOOK_*``: the validating admission webhook for Tasks, served over HTTPS by every
replica beside its HTTP server, on a port of its own."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cadenza.settings.certificates import serving_pair
from cadenza.settings.reading import Reader, SettingsError, boolean


@dataclass(frozen=True)
class WebhookSettings:
    enabled: bool = False
    """Serve the validating admission webhook for Tasks (``CADENZA_WEBHOOK_ENABLED``); default:
    on when ``CADENZA_WEBHOOK_CERT_FILE`` is set, off otherwise. Every replica serves it; the
    ValidatingWebhookConfiguration comes from the Helm chart, never from the operator."""

    host: str = "0.0.0.0"
    """Address the webhook's HTTPS server binds (``CADENZA_WEBHOOK_HOST``)."""

    port: int = 9443
    """Port of the webhook's HTTPS server (``CADENZA_WEBHOOK_PORT``); must differ from
    ``CADENZA_HTTP_PORT``, and from every other replica's on one host."""

    cert_file: Path | None = None
    """PEM serving certificate, its chain after it (``CADENZA_WEBHOOK_CERT_FILE``); it must be
    valid for the name the API server calls, e.g. ``<service>.<namespace>.svc``. Re-read when the
    file changes, so a rotated Secret needs no restart."""

    key_file: Path | None = None
    """PEM private key of that certificate (``CADENZA_WEBHOOK_KEY_FILE``)."""


def read_webhook(read: Reader, *, http_host: str, http_port: int) -> WebhookSettings:
    """The section; the HTTP server's address is handed in so the two cannot share a port."""
    enabled = read(
        "CADENZA_WEBHOOK_ENABLED", boolean, bool(read("CADENZA_WEBHOOK_CERT_FILE", str, ""))
    )
    host = read("CADENZA_WEBHOOK_HOST", str, "0.0.0.0")
    port = read("CADENZA_WEBHOOK_PORT", int, 9443, minimum=1, maximum=65535)
    if not enabled:
        return WebhookSettings(enabled=False, host=host, port=port)
    pair = serving_pair(read, "CADENZA_WEBHOOK_CERT_FILE", "CADENZA_WEBHOOK_KEY_FILE")
    if pair is None:
        raise SettingsError(
            "the webhook needs a serving certificate: set both CADENZA_WEBHOOK_CERT_FILE and "
            "CADENZA_WEBHOOK_KEY_FILE, or CADENZA_WEBHOOK_ENABLED=false"
        )
    if port == http_port and _same_interface(host, http_host):
        raise SettingsError(
            f"CADENZA_WEBHOOK_PORT ({port}) must differ from CADENZA_HTTP_PORT ({http_port})"
        )
    return WebhookSettings(enabled=True, host=host, port=port, cert_file=pair[0], key_file=pair[1])


def _same_interface(a: str, b: str) -> bool:
    return a == b or "0.0.0.0" in (a, b)

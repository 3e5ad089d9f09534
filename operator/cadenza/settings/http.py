"""``CADENZA_HTTP_*``: the replica's one HTTP server (probes, API, callbacks, metrics), where it
listens, the URL others reach it at, and its optional serving certificate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cadenza.settings.certificates import serving_pair
from cadenza.settings.reading import Reader


@dataclass(frozen=True)
class HttpSettings:
    host: str = "0.0.0.0"
    """Address the replica's HTTP server (probes, API, callbacks, metrics) binds
    (``CADENZA_HTTP_HOST``)."""

    port: int = 8080
    """Port of that server (``CADENZA_HTTP_PORT``); distinct per replica on one host."""

    advertise_url: str = ""
    """Base URL other parties use to reach this replica, e.g. in callback URLs given to sidecars
    (``CADENZA_HTTP_ADVERTISE_URL``); default ``http://<host>:<port>``, ``https://`` when the
    server has a certificate."""

    tls_cert_file: Path | None = None
    """PEM serving certificate, its chain after it (``CADENZA_HTTP_TLS_CERT_FILE``): with it the
    server speaks HTTPS only. It must be valid for the host of the advertise URL (the Service
    name, ``<service>.<namespace>.svc``), which sidecars verify. Re-read when a file changes."""

    tls_key_file: Path | None = None
    """PEM private key of that certificate (``CADENZA_HTTP_TLS_KEY_FILE``); both or neither."""


def read_http(read: Reader, host: str, port: int) -> HttpSettings:
    """The section around the host and port read first, which the webhook checks its own
    against."""
    pair = serving_pair(read, "CADENZA_HTTP_TLS_CERT_FILE", "CADENZA_HTTP_TLS_KEY_FILE")
    scheme = "https" if pair else "http"
    advertise = read(
        "CADENZA_HTTP_ADVERTISE_URL",
        str,
        f"{scheme}://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}",
    )
    cert, key = pair or (None, None)
    return HttpSettings(
        host=host,
        port=port,
        advertise_url=advertise.rstrip("/"),
        tls_cert_file=cert,
        tls_key_file=key,
    )

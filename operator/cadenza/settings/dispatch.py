"""``CADENZA_DISPATCH_CA_FILE``: whom the leader trusts when it dispatches to a sidecar over
HTTPS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cadenza.settings.certificates import ca_file
from cadenza.settings.reading import Reader


@dataclass(frozen=True)
class DispatchSettings:
    ca_file: Path | None = None
    """PEM bundle of the CAs a sidecar's certificate is verified against when its Executor says
    ``scheme: https`` (``CADENZA_DISPATCH_CA_FILE``); default: the system trust store. The
    certificate must name the address dialled: the pod IP (an IP SAN), or the host of an
    endpoint's ``baseUrl``. Read again by each new leader term."""


def read_dispatch(read: Reader) -> DispatchSettings:
    return DispatchSettings(ca_file=ca_file(read, "CADENZA_DISPATCH_CA_FILE"))

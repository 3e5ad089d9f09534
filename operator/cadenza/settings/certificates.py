"""The PEM files the settings name, checked once at start: a serving pair (the HTTP server's and
the webhook's) and a CA bundle (dispatch). A file that cannot serve or verify stops the start with
the variable named, rather than failing the first handshake; :mod:`cadenza.tls` loads them for use.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from cadenza.settings.reading import Reader, SettingsError


def serving_pair(read: Reader, cert_var: str, key_var: str) -> tuple[Path, Path] | None:
    """Both files, readable and a certificate with its own key; None when neither is set."""
    cert, key = read(cert_var, str, ""), read(key_var, str, "")
    if not cert and not key:
        return None
    if not cert or not key:
        given, missing = (cert_var, key_var) if cert else (key_var, cert_var)
        raise SettingsError(
            f"{given} needs {missing}: set both, the certificate and its private key, or neither"
        )
    for name, path in ((cert_var, cert), (key_var, key)):
        if not (Path(path).is_file() and os.access(path, os.R_OK)):
            raise SettingsError(f"{name}={path!r} is not a readable file")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError, ValueError) as error:
        raise SettingsError(
            f"{cert_var}={cert!r} and {key_var}={key!r} are not a PEM certificate and its "
            f"private key: {error}"
        ) from None
    return Path(cert), Path(key)


def ca_file(read: Reader, name: str) -> Path | None:
    """The CA bundle ``name`` points at, if it loads; None when unset (the system trust store)."""
    raw = read(name, str, "")
    if not raw:
        return None
    try:
        ssl.create_default_context(cafile=raw)
    except (ssl.SSLError, OSError) as error:
        raise SettingsError(f"{name}={raw!r} is not a readable PEM CA bundle: {error}") from None
    return Path(raw)

"""TLS for the sidecar's two HTTP legs: its server (dispatch, ``--tls-cert-file`` and
``--tls-key-file``) and its client to the operator (callbacks and registration,
``--callback-ca-file``).

Invariants:
- Off unless configured: without the pair the sidecar serves plain HTTP; without a CA file an
  ``https://`` callback URL is verified against the system trust store. Verification and the
  host name check are never switched off.
- The serving pair is loaded once at start (a bad pair stops the start, naming the flag) and
  again whenever either file changes (cert-manager renews it; the kubelet swaps the Secret's
  files): :func:`watch_pair` loads the new pair into the same ``SSLContext``, which every later
  handshake uses, with no restart and no dropped connection. A pair that does not load (half
  written, key and certificate not matching) changes nothing: the previous one keeps serving,
  and a warning is logged.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

from cadenza_sidecar import file_watch

logger = logging.getLogger(__name__)


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server context serving the PEM pair; raises ValueError saying what is wrong with it."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    load_pair(context, cert_file, key_file)
    return context


def load_pair(context: ssl.SSLContext, cert_file: Path, key_file: Path) -> None:
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:  # before OSError, of which it is one
        raise ValueError(
            f"not a PEM certificate and the private key that matches it ({exc.reason or exc})"
        ) from None
    except OSError as exc:
        raise ValueError(f"cannot read them ({exc.strerror or exc})") from None


def client_context(ca_file: Path | None) -> ssl.SSLContext:
    """A verifying client context trusting ``ca_file`` (PEM bundle), else the system's CAs;
    raises ValueError saying what is wrong with the file."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except ssl.SSLError as exc:  # before OSError, of which it is one
        raise ValueError(f"holds no PEM CA certificate ({exc.reason or exc})") from None
    except OSError as exc:
        raise ValueError(f"cannot read it ({exc.strerror or exc})") from None


async def watch_pair(
    context: ssl.SSLContext, cert_file: Path, key_file: Path, poll_seconds: float
) -> None:
    """Reload the pair into ``context`` whenever a file of it changes; runs until cancelled."""

    async def reload() -> None:
        try:
            await asyncio.to_thread(_reload, context, cert_file, key_file)
        except ValueError as exc:
            logger.warning(
                f"TLS certificate or key changed but {exc}; still serving the previous pair",
                extra={"certFile": str(cert_file), "keyFile": str(key_file)},
            )
            return
        logger.info("TLS certificate reloaded", extra={"certFile": str(cert_file)})

    await file_watch.watch([cert_file, key_file], poll_seconds, reload)


def _reload(context: ssl.SSLContext, cert_file: Path, key_file: Path) -> None:
    # Tried on a scratch context first: OpenSSL drops the live context's key when a new
    # certificate does not match it, so a failed load there would break every later handshake.
    server_context(cert_file, key_file)
    load_pair(context, cert_file, key_file)

"""TLS for the operator's two HTTP legs: its own server (probes, API, callbacks; with
``CADENZA_HTTP_TLS_CERT_FILE``) and its client to the sidecars (dispatch, cancels, views and
probes of Executors with ``scheme: https``; trusting ``CADENZA_DISPATCH_CA_FILE``).

Invariants:
- Verification and the host name check are always on for dispatch: the name checked is the
  address dialled (the pod IP, or the host of an endpoint's ``baseUrl``), so a sidecar's
  certificate must hold it as a SAN. There is no switch to skip the check.
- The server's pair is re-read when either file changes (cert-manager renews it, the kubelet
  swaps the Secret's files): the new pair is tried on a scratch context first and only then
  loaded into the live one, because OpenSSL drops the live context's key when a certificate
  that does not match it is loaded; a pair that does not load keeps the previous one serving
  and is logged once per change.
- Settings have checked every file at start (:mod:`cadenza.settings`); loading here raises what
  ``ssl`` raises.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

log = logging.getLogger(__name__)

RELOAD_POLL_SECONDS = 10.0
"""How often the serving pair's files are checked for a renewal (one ``stat`` each)."""


def client_context(ca_file: Path | None) -> ssl.SSLContext:
    """A verifying client context trusting ``ca_file``, else the system's CAs."""
    return ssl.create_default_context(cafile=ca_file)


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


def _stamp(paths: tuple[Path, Path]) -> tuple[tuple[int, int, int], ...] | None:
    try:
        stats = [path.stat() for path in paths]
    except OSError:
        return None
    return tuple((st.st_ino, st.st_size, st.st_mtime_ns) for st in stats)


def _reload(context: ssl.SSLContext, cert_file: Path, key_file: Path) -> None:
    server_context(cert_file, key_file)
    context.load_cert_chain(cert_file, key_file)


async def keep_fresh(
    context: ssl.SSLContext,
    cert_file: Path,
    key_file: Path,
    poll_seconds: float = RELOAD_POLL_SECONDS,
) -> None:
    """Reload the pair into ``context`` whenever a file of it changes; runs until cancelled."""
    files = (cert_file, key_file)
    seen = _stamp(files)
    while True:
        await asyncio.sleep(poll_seconds)
        if (stamp := _stamp(files)) == seen:
            continue
        seen = stamp
        try:
            await asyncio.to_thread(_reload, context, cert_file, key_file)
        except (ssl.SSLError, OSError) as error:
            log.warning("HTTP TLS pair %s changed but does not load (%s); serving the previous",
                        cert_file, error)  # fmt: skip
        else:
            log.info("HTTP TLS pair %s reloaded", cert_file)

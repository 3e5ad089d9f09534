"""Callback tokens: the secret each attempt's pod proves its report with.

A token is 32 bytes from the operating system's CSPRNG, URL-safe base64 without padding, as
``secrets.token_urlsafe(32)`` makes it. Only its SHA-256 is stored (``token_hash``).

:class:`CallbackTokens` reads the OS's randomness 4 KiB at a time, one system call for 128
tokens instead of one each: at a thousand dispatches a second that call was a visible share of
the leader's event loop. The bytes are the same ``os.urandom`` bytes; none is used twice.

WARNING: not thread-safe; one instance per event loop (the dispatcher's).
"""

from __future__ import annotations

import base64
import hashlib
import os

TOKEN_BYTES = 32
_READ = 128 * TOKEN_BYTES


class CallbackTokens:
    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def new(self) -> str:
        """A fresh token."""
        if self._at + TOKEN_BYTES > len(self._pool):
            self._pool, self._at = os.urandom(_READ), 0
        raw = self._pool[self._at : self._at + TOKEN_BYTES]
        self._at += TOKEN_BYTES
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def token_hash(token: str) -> str:
    """What the store keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()

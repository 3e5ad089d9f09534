"""Callback tokens: each one fresh, shaped as ``secrets.token_urlsafe(32)`` shapes them."""

from __future__ import annotations

import base64
import hashlib

from cadenza.dispatch.callback_tokens import TOKEN_BYTES, CallbackTokens, token_hash


def test_tokens_are_distinct_urlsafe_and_32_random_bytes_each() -> None:
    tokens = CallbackTokens()
    made = [tokens.new() for _ in range(1000)]  # across several reads of the OS's randomness
    assert len(set(made)) == len(made)
    for token in made:
        assert len(token) == 43 and "=" not in token
        assert len(base64.urlsafe_b64decode(token + "=")) == TOKEN_BYTES


def test_only_the_hash_is_kept() -> None:
    assert token_hash("abc") == hashlib.sha256(b"abc").hexdigest()

"""Texts and values that come from pods and clients, fitted to what their columns hold.

A handler's error or a pod's refusal is whatever the pod sent. Stored as it came, a long one
fails its write (``TEXT`` holds 65,535 bytes; strict SQL mode refuses more), and a failed write
is retried forever by a sidecar or stops the leader's work: one pod's output must not do that.

Invariants: a fitted text is at most ``max_bytes`` bytes in UTF-8 and says how much was cut; a
fitted result is the value itself when a JSON column takes it, else a small object saying why
not (with the head of its JSON text); an exit code is a 32-bit integer or None.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_ERROR_BYTES = 16_384
"""An error or refusal text as stored: well inside a ``TEXT`` column."""
MAX_RESULT_BYTES = 1_048_576
"""A result's JSON as stored: as large as one callback body may be."""
MAX_DEPTH = 31
"""How deep a JSON column's value may nest: MariaDB's ``JSON_VALID`` refuses 32 levels."""
RESULT_PREVIEW_CHARS = 1_024
INT32 = range(-(2**31), 2**31)


def fit_text(text: str | None, max_bytes: int = MAX_ERROR_BYTES) -> str | None:
    """``text`` cut to ``max_bytes`` bytes of UTF-8, ending in a marker saying how many went."""
    if text is None or len(text) * 4 <= max_bytes:
        return text  # fits whatever the characters are
    encoded = text.encode("utf-8", errors="replace")
    if len(encoded) <= max_bytes:
        return text
    marker = f" [... {len(encoded)} bytes in all, cut to fit ...]"
    head = encoded[: max(0, max_bytes - len(marker.encode()) - 32)]
    return head.decode("utf-8", errors="ignore") + marker


def fit_result(value: Any, max_bytes: int = MAX_RESULT_BYTES) -> Any:
    """``value`` when a JSON column takes it (its JSON fits ``max_bytes``, it nests at most
    ``MAX_DEPTH`` deep, it holds no NaN or infinity); else an object saying why not, with the
    head of its JSON text."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"truncated": True, "reason": "not finite"}
    if isinstance(value, str) and len(value) * 6 + 2 <= max_bytes:
        return value  # even fully escaped it fits
    try:
        encoded = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (ValueError, TypeError, RecursionError) as exc:
        return {"truncated": True, "reason": f"not storable as JSON: {str(exc)[:200]}"}
    size = len(encoded.encode("utf-8"))
    if size > max_bytes:
        return {"truncated": True, "bytes": size, "preview": encoded[:RESULT_PREVIEW_CHARS]}
    if _deeper_than(value, MAX_DEPTH):
        reason = f"nests deeper than {MAX_DEPTH} levels"
        return {"truncated": True, "reason": reason, "preview": encoded[:RESULT_PREVIEW_CHARS]}
    return value


def _deeper_than(value: Any, depth: int) -> bool:
    """Whether ``value`` nests more than ``depth`` arrays and objects deep."""
    level: list[Any] = [value]
    for _ in range(depth):
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
        ]
        if not any(isinstance(item, dict | list) for item in level):
            return False
    return any(isinstance(item, dict | list) for item in level)


def fit_exit_code(code: int | None) -> int | None:
    """An exit code a 32-bit column holds, or None."""
    return code if code is None or code in INT32 else None

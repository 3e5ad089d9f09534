"""Manual triggers: the dedupe key of a ``cadenza.dev/trigger`` annotation value.

Pure. The scheduler claims a manual run under this key and ``UNIQUE(task_uid, trigger_key)``
makes a value seen before a no-op; the REST API finds the run of a trigger by the same key.
"""

from __future__ import annotations

import hashlib

MAX_TRIGGER_KEY = 191
"""The ``task_executions.trigger_key`` column's length."""


def trigger_key(value: str) -> str:
    """The dedupe key of an annotation value; long values are hashed to fit the column."""
    if len(value) <= MAX_TRIGGER_KEY:
        return value
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()

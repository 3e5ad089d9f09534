"""The dispatch token the operator sends to a sidecar, with the one before a rotation.

Invariant: ``previous`` is set only within the grace after a rotation (the Executor's Secret
still holds it and its ``rotated-at`` is recent); the client then tries it once, and only when
a sidecar refused ``current`` with 401: its kubelet has not updated the mounted token yet.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DispatchToken:
    current: str
    previous: str | None = None

    def __repr__(self) -> str:  # never a token in a log line or a traceback
        return f"DispatchToken(previous={'set' if self.previous else 'none'})"


def tokens(token: DispatchToken | str | None) -> tuple[str | None, str | None]:
    """(the token to send, the one to try after a 401 or None); a plain str has no fallback."""
    if isinstance(token, DispatchToken):
        return token.current, token.previous
    return token, None

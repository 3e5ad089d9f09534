"""The dispatch tokens ``/v1/*`` accepts, and the watch that re-reads the token file.

A rotation (the operator writes a new token into the Executor's Secret; the kubelet swaps the
mounted file in place) reaches a running sidecar without a restart: :func:`watch_file` notices
the file changed (its inode, size or mtime; one ``stat`` per poll, the file is read only when
those change) and :meth:`DispatchTokens.rotate` makes the new token current.

Invariants:
- The token that was current before a rotation stays accepted for ``grace_seconds`` after it
  (the operator may still hold it: its cache, or a kubelet slower on another pod), then never
  again. At most two tokens are ever accepted; a second rotation within the grace drops the
  oldest.
- Every check compares the offered token with each accepted one in constant time, both always,
  so the answer's timing tells nothing of which token (if any) nearly matched.
- A rewritten file that is empty, unreadable or not UTF-8 changes nothing: the current token
  stays (a warning is logged once per change of the file), so a botched rotation never locks
  the operator out.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from pathlib import Path

from cadenza_sidecar import file_watch

logger = logging.getLogger(__name__)


class DispatchTokens:
    def __init__(
        self, token: str, grace_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._current = token.encode()
        self._previous: bytes | None = None
        self._previous_until = 0.0
        self._grace_seconds = grace_seconds
        self._clock = clock

    def accepts(self, offered: bytes) -> bool:
        """Whether ``offered`` is the current token, or the previous one within its grace."""
        current = hmac.compare_digest(offered, self._current)
        previous = hmac.compare_digest(offered, self._previous or self._current)
        in_grace = self._previous is not None and self._clock() < self._previous_until
        return current or (previous and in_grace)

    def rotate(self, token: str) -> None:
        """Make ``token`` current; the one current until now stays accepted for the grace."""
        new = token.encode()
        if hmac.compare_digest(new, self._current):
            return
        self._previous, self._current = self._current, new
        self._previous_until = self._clock() + self._grace_seconds
        logger.info(
            "dispatch token rotated; the previous one is accepted for the grace",
            extra={"graceSeconds": self._grace_seconds},
        )

    def replace(self, token: str) -> None:
        """Make ``token`` the only one accepted (a registration answered it)."""
        self._current, self._previous = token.encode(), None


def read_token_file(path: Path) -> str:
    """The file's token, whitespace around it dropped (at start and after every change); raises
    ValueError saying what is wrong with the file."""
    try:
        token = path.read_bytes().decode("utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ValueError("it is not UTF-8 text") from None
    if not token:
        raise ValueError("it is empty")
    return token


async def watch_file(tokens: DispatchTokens, path: Path, poll_seconds: float) -> None:
    """Re-read ``path`` whenever it changes and rotate to its token; runs until cancelled."""

    async def reread() -> None:
        try:
            token = await asyncio.to_thread(read_token_file, path)
        except ValueError as exc:
            logger.warning(
                f"token file changed but {exc}; still accepting the current token",
                extra={"tokenFile": str(path)},
            )
            return
        tokens.rotate(token)

    await file_watch.watch([path], poll_seconds, reread)

"""One warning per interval for a failure that repeats across many objects.

While the API server is away, every Task's status write fails; with thousands of Tasks a warning
for each is thousands of lines saying the same thing. :class:`Throttled` logs the first failure,
then at most one per ``every`` seconds, saying how many it left out since the last.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class Throttled:
    def __init__(
        self,
        log: logging.Logger,
        what: str,
        every: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``what`` names the failing operation in the summary lines ("status writes")."""
        self._log = log
        self._what = what
        self._every = every
        self._clock = clock
        self._logged_at: float | None = None
        self._left_out = 0

    def failed(self, message: str, *args: object) -> None:
        """A warning with ``message % args``, unless one was logged less than ``every`` ago."""
        now = self._clock()
        if self._logged_at is not None and now - self._logged_at < self._every:
            self._left_out += 1
            return
        if self._left_out:
            message += f" (and {self._left_out} more {self._what} failed since the last warning)"
        self._log.warning(message, *args)
        self._logged_at, self._left_out = now, 0

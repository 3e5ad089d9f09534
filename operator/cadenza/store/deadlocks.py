"""Retrying a transaction that InnoDB chose as a deadlock victim.

Callbacks (any replica) and the leader's dispatch writes touch the same run rows and the indexes
over them at the same moments, so InnoDB occasionally rolls one of them back with a deadlock
(1213) or a lock wait timeout (1205). Both leave nothing half-written: running the whole
transaction again is the documented remedy.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import exc as sa_exc

T = TypeVar("T")
log = logging.getLogger(__name__)

_RETRYABLE = {1205, 1213}


def retryable(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    return (
        isinstance(exc, sa_exc.OperationalError)
        and orig is not None
        and bool(orig.args)
        and orig.args[0] in _RETRYABLE
    )


def retry_deadlocks(transaction: Callable[[], T], attempts: int = 5) -> T:
    """Run ``transaction`` (which opens and commits its own transaction) until it gets through
    without a deadlock, at most ``attempts`` times."""
    for attempt in range(1, attempts + 1):
        try:
            return transaction()
        except sa_exc.OperationalError as exc:
            if not retryable(exc) or attempt == attempts:
                raise
            log.debug("deadlock victim (attempt %d); running the transaction again", attempt)
            time.sleep(random.uniform(0.005, 0.05) * attempt)
    raise AssertionError("unreachable")

"""Times as the commands show and take them. Pure: ``now`` is always an argument.

- :func:`relative`: ``in 8s``, ``3m ago`` (kubectl's age units: s, m, h, d).
- :func:`instant`: ``--since``/``--until`` values, RFC 3339 or a duration back from now
  (``90s``, ``15m``, ``2h``, ``7d``), as the RFC 3339 UTC string the API takes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"([0-9]+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse(text: str) -> datetime | None:
    """An RFC 3339 time from the API (``Z`` or an offset), or None."""
    try:
        found = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    return found if found.tzinfo else found.replace(tzinfo=UTC)


def span(seconds: float) -> str:
    """``45s``, ``3m``, ``2h5m``, ``4d``: the two largest units at most, as kubectl's ages."""
    whole = int(seconds)
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, rest = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{rest}m" if rest and hours < 8 else f"{hours}h"
    return f"{hours // 24}d"


def relative(text: str | None, now: datetime) -> str:
    """``in 8s`` for a future time, ``3m ago`` for a past one, ``""`` for none."""
    when = parse(text) if text else None
    if when is None:
        return text or ""
    delta = (when - now).total_seconds()
    return f"in {span(delta)}" if delta > 0 else f"{span(-delta)} ago"


def instant(text: str, now: datetime, flag: str) -> str:
    """``text`` as an RFC 3339 UTC time: an RFC 3339 time itself, or a duration before ``now``."""
    duration = _DURATION.fullmatch(text.strip())
    if duration:
        back = timedelta(seconds=int(duration.group(1)) * _UNITS[duration.group(2)])
        return _rfc3339(now - back)
    when = parse(text)
    if when is None or "T" not in text.upper():
        raise ValueError(
            f"{flag} takes an RFC 3339 time (2025-01-09T01:00:00Z) or a duration back from"
            f" now (90s, 15m, 2h, 7d), got {text!r}"
        )
    return _rfc3339(when)


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

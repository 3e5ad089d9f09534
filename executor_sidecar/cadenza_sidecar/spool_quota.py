"""The spool's quota: how many results, and how many bytes of them, the spool holds or has promised.

A run takes its room when it is admitted: one file, and the size of its record measured with empty
output fields plus ``--max-output-bytes``' worth of room for them (``Spool.reserve``). When the
result is written, the reservation shrinks to the file's real size; when its callback settles, the
room is given back. A result that could not be written (a full disk) keeps its reservation until
its callback settles: it waits in memory instead, and the quota bounds that memory as it bounds
the disk.

Invariants:
- At every admission, files held or reserved stay <= ``max_files`` and their bytes <= ``max_bytes``;
  a dispatch that would break either is refused with ``Full`` before anything starts, which the
  API answers 429 busy.
- An admitted run's result is never refused for space: ``fit`` trims its output fields (saying so
  inside them) until its record is no larger than its reservation.
- Only the event loop touches a Quota (no locks): the spool updates it before and after the file
  work it does in worker threads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from cadenza_sidecar import protocol
from cadenza_sidecar.protocol import ExecutionId, JsonValue, Report

_NULL_BYTES = len("null")


class Full(Exception):
    """The spool has no room for one more result; the message says which limit is reached."""


class Quota:
    """Room taken per execution id, whether reserved, written, or waiting in memory."""

    def __init__(self, max_files: int, max_bytes: int) -> None:
        self.max_files = max_files
        self.max_bytes = max_bytes
        self._sizes: dict[ExecutionId, int] = {}
        self.bytes = 0

    @property
    def files(self) -> int:
        return len(self._sizes)

    def size_of(self, execution_id: ExecutionId) -> int | None:
        return self._sizes.get(execution_id)

    def reserve(self, execution_id: ExecutionId, size: int) -> None:
        """Takes room for one result of at most ``size`` bytes, or raises Full."""
        if self.files + 1 > self.max_files:
            raise Full(
                f"spool full: {self.files} of {self.max_files} results spooled or reserved for"
                " runs in flight (--spool-max-files)"
            )
        if self.bytes + size > self.max_bytes:
            raise Full(
                f"spool full: {self.bytes} of {self.max_bytes} bytes spooled or reserved for runs"
                f" in flight, and this run needs {size} (--spool-max-bytes)"
            )
        self.hold(execution_id, size)

    def hold(self, execution_id: ExecutionId, size: int) -> None:
        """Records that ``execution_id`` takes ``size`` bytes (a file written or found at start),
        whatever room it had before; never refused, so a promise is always kept."""
        self.bytes += size - self._sizes.get(execution_id, 0)
        self._sizes[execution_id] = size

    def release(self, execution_ids: Iterable[ExecutionId]) -> None:
        for execution_id in execution_ids:
            self.bytes -= self._sizes.pop(execution_id, 0)


def fit(report: Report, limit: int, measure: Callable[[Report], int]) -> Report:
    """``report`` with ``result`` and ``error`` cut (each ending in a marker saying how much was
    cut) so that ``measure(report) <= limit``; unchanged when it fits already.

    The two fields share the room: each gets at least half of it, and whatever the other does
    not need. A result that is not a string is cut as its JSON text.
    """
    if measure(report) <= limit:
        return report
    bare = dataclasses.replace(report, result=None, error=None)
    room = limit - measure(bare) + 2 * _NULL_BYTES
    result_text = None if report.result is None else _text(report.result)
    result_size, error_size = _encoded_size(result_text), _encoded_size(report.error)
    error_room = min(error_size, max(room // 2, room - result_size))
    fitted = dataclasses.replace(
        report,
        result=_cut(result_text, room - error_room),
        error=_cut(report.error, error_room),
    )
    return fitted if measure(fitted) <= limit else bare


def _text(value: JsonValue) -> str:
    return value if isinstance(value, str) else protocol.dumps(value)


def _encoded_size(text: str | None) -> int:
    return len(protocol.dumps(text).encode("utf-8"))


def _cut(text: str | None, room: int) -> str | None:
    """The longest head of ``text`` that, with its marker, takes at most ``room`` bytes as JSON;
    None (``null``) when not even the marker fits."""
    if text is None or _encoded_size(text) <= room:
        return text
    total = len(text.encode("utf-8"))

    def shortened(keep: int) -> str:
        dropped = total - len(text[:keep].encode("utf-8"))
        return f"{text[:keep]}[... {dropped} bytes truncated to fit the spool ...]"

    low, high = -1, len(text)  # shortened(low) fits (-1: not even the bare marker), high does not
    while high - low > 1:
        middle = (low + high) // 2
        if _encoded_size(shortened(middle)) <= room:
            low = middle
        else:
            high = middle
    return shortened(low) if low >= 0 else None

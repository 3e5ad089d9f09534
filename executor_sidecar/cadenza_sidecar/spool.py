"""The spool: finished results kept on disk until their callback is acknowledged or refused.

Format: one JSON file per execution, ``<sha256(executionId)>.json`` (mode 0600: it holds the
callback token; the id itself is inside the record), written as a temp file, fsynced, renamed
over the final name, and the directory fsynced. Anything else in the directory is ignored;
leftover ``*.tmp`` files are deleted at start and files that cannot be parsed are renamed to
``*.corrupt`` (and logged) so they are not retried. ``callbackBatchUrl`` is written only when
the run has one and is optional on reading, so the format stays version 1 both ways: an older
sidecar ignores the key and sends that report alone.

Invariants:
- ``save`` returns only once the file and its directory entry are durable, so a run whose result
  was saved survives kill -9 of the sidecar.
- A file is either absent or complete: readers never see a half-written record.
- Removal is best-effort durable: if it is lost in a crash the result is re-sent, which the
  receiver must tolerate anyway (delivery is at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from cadenza_sidecar import protocol
from cadenza_sidecar.protocol import ExecutionId, Report, RunState

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_SUFFIX = ".json"


def file_name(execution_id: ExecutionId) -> str:
    """A fixed-length, filesystem-safe name whatever characters the id holds."""
    return hashlib.sha256(execution_id.encode("utf-8")).hexdigest() + _SUFFIX


def _record(report: Report) -> dict[str, Any]:
    record: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "callbackUrl": report.callback_url,
        "callbackToken": report.callback_token,
        "callback": report.callback_body(),
    }
    if report.callback_batch_url is not None:
        record["callbackBatchUrl"] = report.callback_batch_url
    return record


def _report(record: dict[str, Any]) -> Report:
    if record.get("version") != FORMAT_VERSION:
        raise ValueError(f"unknown spool format version {record.get('version')!r}")
    body = record["callback"]
    return Report(
        execution_id=ExecutionId(str(body["executionId"])),
        status=RunState(body["status"]),
        attempt=int(body["attempt"]),
        pod=str(body["pod"]),
        started_at=str(body["startedAt"]),
        finished_at=str(body["finishedAt"]),
        result=body["result"],
        error=body["error"],
        exit_code=body["exitCode"],
        callback_url=str(record["callbackUrl"]),
        callback_token=str(record["callbackToken"]),
        callback_batch_url=_optional_string(record.get("callbackBatchUrl")),
    )


def _optional_string(value: Any) -> str | None:
    return None if value is None else str(value)


class Spool:
    """One directory of pending results; blocking file work runs in a worker thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def prepare(self) -> None:
        """Creates the directory and removes temp files a crash left behind."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for leftover in self.directory.glob("*.tmp"):
            leftover.unlink(missing_ok=True)

    def load(self) -> list[Report]:
        """Every pending result, oldest first."""
        paths = sorted(self.directory.glob("*" + _SUFFIX), key=lambda p: p.stat().st_mtime)
        reports = []
        for path in paths:
            try:
                reports.append(_report(protocol.loads(path.read_bytes())))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                quarantined = path.with_suffix(".corrupt")
                logger.error(
                    "unreadable spool file set aside",
                    extra={"path": str(path), "movedTo": str(quarantined), "reason": repr(exc)},
                )
                with contextlib.suppress(OSError):
                    path.rename(quarantined)
        return reports

    async def save(self, report: Report) -> None:
        await asyncio.to_thread(self._save, report)

    async def remove(self, execution_id: ExecutionId) -> None:
        await asyncio.to_thread(self._remove, execution_id)

    async def remove_many(self, execution_ids: list[ExecutionId]) -> None:
        """Removes several files with one directory fsync (a settled batch of callbacks)."""
        await asyncio.to_thread(self._remove_many, execution_ids)

    def pending(self) -> list[str]:
        return sorted(p.name for p in self.directory.glob("*" + _SUFFIX))

    def _save(self, report: Report) -> None:
        final = self.directory / file_name(report.execution_id)
        temp = final.with_name(final.name + ".tmp")
        data = protocol.dumps(_record(report)).encode("utf-8")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, final)
        self._sync_directory()

    def _remove(self, execution_id: ExecutionId) -> None:
        self._remove_many([execution_id])

    def _remove_many(self, execution_ids: list[ExecutionId]) -> None:
        for execution_id in execution_ids:
            (self.directory / file_name(execution_id)).unlink(missing_ok=True)
        self._sync_directory()

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

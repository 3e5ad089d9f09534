"""The spool: finished results kept on disk until their callback is acknowledged or refused.

Format: one JSON file per execution, ``<sha256(executionId)>.json`` (mode 0600: it holds the
callback token; the id itself is inside the record), written as a temp file, fsynced, renamed
over the final name, and the directory fsynced. Anything else in the directory is ignored;
leftover ``*.tmp`` files are deleted at start and files that cannot be parsed are renamed to
``*.corrupt`` (and logged) so they are not retried. ``callbackBatchUrl`` is written only when
the run has one and is optional on reading, so the format stays version 1 both ways: an older
sidecar ignores the key and sends that report alone.

Writes are committed in groups: the results that finish while one group is being written
form the next, written by one worker thread, each file fsynced, the directory fsynced once for
the group. A pod finishing hundreds of runs a second then pays one thread hop and one directory
fsync per group instead of per run; a lone result is written at once, as before.

Invariants:
- ``save`` returns only once the file and its directory entry are durable, so a run whose result
  was saved survives kill -9 of the sidecar. In a group, each result fails or succeeds on its
  own (one file's full disk fails that save only); a failed directory fsync fails them all.
- A file is either absent or complete: readers never see a half-written record.
- Removal is best-effort durable: if it is lost in a crash the result is re-sent, which the
  receiver must tolerate anyway (delivery is at least once).
- The directory is 0700 and every file in it 0600: only the sidecar's uid reads the callback
  tokens (a command run with ``--handler-user`` cannot).
- A failed write (full disk, I/O error) leaves no ``*.tmp`` behind: the temp file is removed
  before the error reaches the caller.
- The spool is bounded (``spool_quota``): a run reserves its room when admitted, so the result of
  an admitted run always finds room; ``fit`` trims it to its reservation before it is saved.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Sequence
from typing import Any

from cadenza_sidecar import protocol, spool_quota
from cadenza_sidecar.protocol import ExecutionId, ExecutionRequest, Report, RunState
from cadenza_sidecar.settings import SpoolSettings

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_SUFFIX = ".json"
# Stand-ins of the longest values a finished run's record takes where the request does not say:
# the two timestamps (always this long) and the exit code (the room "null" leaves it).
_TIMESTAMP_STAND_IN = "2024-05-01T12:00:00.000Z"
_EXIT_CODE_ROOM = len("-2147483648") - len("null")
MAX_GROUP = 256
"""Results written together at most: bounds how long the first of a group waits for the rest."""

_Write = tuple[ExecutionId, bytes]


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


def encode(report: Report) -> bytes:
    """The spool file's content for ``report``."""
    return protocol.dumps(_record(report)).encode("utf-8")


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
    """One directory of pending results and its quota; blocking file work runs in a worker
    thread, the quota is kept on the event loop."""

    def __init__(self, settings: SpoolSettings) -> None:
        self.directory = settings.directory
        self._prefix = os.path.join(settings.directory, "")
        """The directory as text ending in a separator: each file's path is joined as text (a
        ``Path`` built per file and turned back into text for each call was a fifth of the
        sidecar's CPU at 1,000 runs a second)."""
        self.quota = spool_quota.Quota(settings.max_files, settings.max_bytes)
        self._output_reserve_bytes = settings.output_reserve_bytes
        self._waiting: list[tuple[_Write, asyncio.Future[None]]] = []
        self._writing: asyncio.Task[None] | None = None

    def prepare(self) -> None:
        """Creates the directory (or makes an existing one, such as an emptyDir volume, which is
        0777, private: 0700) and removes temp files a crash left behind."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        for leftover in self.directory.glob("*.tmp"):
            leftover.unlink(missing_ok=True)

    def reserve(self, request: ExecutionRequest, pod: str) -> None:
        """Takes room for the result of a run about to start; raises ``spool_quota.Full``."""
        stand_in = Report(
            execution_id=request.execution_id,
            status=RunState.TIMED_OUT,  # as long as any final state's name
            attempt=request.attempt,
            pod=pod,
            started_at=_TIMESTAMP_STAND_IN,
            finished_at=_TIMESTAMP_STAND_IN,
            result=None,
            error=None,
            exit_code=None,
            callback_url=request.callback_url,
            callback_token=request.callback_token,
            callback_batch_url=request.callback_batch_url,
        )
        size = len(encode(stand_in)) + _EXIT_CODE_ROOM + self._output_reserve_bytes
        self.quota.reserve(request.execution_id, size)

    def fit(self, report: Report) -> Report:
        """``report`` as it will be saved: trimmed to the room its run reserved, if it had any."""
        room = self.quota.size_of(report.execution_id)
        if room is None:
            return report
        fitted = spool_quota.fit(report, room, lambda candidate: len(encode(candidate)))
        if fitted is not report:
            logger.warning(
                "result truncated to fit the room its run reserved in the spool",
                extra={"executionId": report.execution_id, "reservedBytes": room},
            )
        return fitted

    def load(self) -> list[Report]:
        """Every pending result, oldest first."""
        paths = sorted(self.directory.glob("*" + _SUFFIX), key=lambda p: p.stat().st_mtime)
        reports = []
        for path in paths:
            try:
                data = path.read_bytes()
                report = _report(protocol.loads(data))
                reports.append(report)
                self.quota.hold(report.execution_id, len(data))
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
        """Writes ``report`` (already ``fit``) durably. On OSError no temp file is left behind,
        and the run keeps its reserved room until ``remove``: its result then waits in memory."""
        data = encode(report)
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(((report.execution_id, data), written))
        if self._writing is None:
            self._writing = asyncio.create_task(self._write_groups())
        await written
        self.quota.hold(report.execution_id, len(data))

    async def remove(self, execution_id: ExecutionId) -> None:
        await self.remove_many([execution_id])

    async def remove_many(self, execution_ids: list[ExecutionId]) -> None:
        """Removes several files with one directory fsync (a settled batch of callbacks) and gives
        their room back, even if the removal fails: the callbacks are settled either way."""
        try:
            await asyncio.to_thread(self._remove_many, execution_ids)
        finally:
            self.quota.release(execution_ids)

    def pending(self) -> list[str]:
        return sorted(p.name for p in self.directory.glob("*" + _SUFFIX))

    async def _write_groups(self) -> None:
        """Until no save waits: write the waiting ones as one group, then the next."""
        group: list[tuple[_Write, asyncio.Future[None]]] = []
        try:
            while self._waiting:
                group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
                failures: list[BaseException | None]
                try:
                    failures = [*await asyncio.to_thread(self._save_many, [w for w, _ in group])]
                except Exception as exc:  # a bug, not a disk: each save of the group hears it
                    failures = [exc] * len(group)
                for (_, written), failure in zip(group, failures, strict=True):
                    if written.done():  # its save was cancelled
                        continue
                    if failure is None:
                        written.set_result(None)
                    else:
                        written.set_exception(failure)
        except asyncio.CancelledError:
            for _, written in [*group, *self._waiting]:
                written.cancel()
            self._waiting = []
            raise
        finally:
            self._writing = None

    def _save_many(self, group: Sequence[_Write]) -> list[OSError | None]:
        """Each file of ``group`` written and fsynced, then the directory once; per file, the
        error that kept it from being durable, or None."""
        failures: list[OSError | None] = []
        for execution_id, data in group:
            try:
                self._save(execution_id, data)
                failures.append(None)
            except OSError as exc:
                failures.append(exc)
        if any(failure is None for failure in failures):
            try:
                self._sync_directory()
            except OSError as exc:
                failures = [failure or exc for failure in failures]
        return failures

    def _save(self, execution_id: ExecutionId, data: bytes) -> None:
        final = self._prefix + file_name(execution_id)
        temp = final + ".tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, final)
        except BaseException:
            # ENOSPC, EIO, EFBIG...: a half-written temp file would only take more of the disk.
            try:
                _unlink(temp)
            except OSError as exc:
                logger.error(
                    "could not remove a temp file after a failed write",
                    extra={"path": temp, "reason": repr(exc)},
                )
            raise

    def _remove_many(self, execution_ids: list[ExecutionId]) -> None:
        for execution_id in execution_ids:
            _unlink(self._prefix + file_name(execution_id))
        self._sync_directory()

    def _sync_directory(self) -> None:
        fd = os.open(self._prefix, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _unlink(path: str) -> None:
    """Remove ``path`` if it is there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)

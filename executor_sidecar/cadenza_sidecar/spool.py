"""The spool: finished results kept on disk until their callback is acknowledged or refused.

Format: group files ``<random hex>.jsonl`` (mode 0600: they hold callback tokens), one record per
line; each record is a JSON object with ``version`` 1, ``callbackUrl``, ``callbackToken``,
``callback`` (the body sent) and, when the run has one, ``callbackBatchUrl``. A file is written
as a temp file, fsynced, renamed over its final name, and the directory fsynced. Files named
``*.json`` hold one record each: that is how sidecars before group files spooled, and they are
still read and removed the same way. Anything else in the directory is ignored; leftover
``*.tmp`` files are deleted at start, files that cannot be parsed are renamed to ``*.corrupt``
(and logged) so they are not retried, and a file holding only results an older file holds too
is removed at start (and logged): nothing would ever settle it.

Writes are committed in groups: the results that finish while one group is being written form
the next, written as one file by one worker thread. A pod finishing hundreds of runs a second
then creates, renames and later removes one file per group instead of one per run: those
directory operations, not the fsyncs, were most of the sidecars' CPU at 1,000 runs a second
(``docs/benchmark.md``). A lone result is written at once, as before. When some results of a
file are settled and others not, the file is written again with those left (fsynced and
renamed as a save is), so a restart re-sends only what was never settled.

Invariants:
- ``save`` returns only once its file and directory entry are durable, so a run whose result
  was saved survives kill -9 of the sidecar. A group fails or succeeds whole (a full disk fails
  every save of the group: each result then waits in memory, as a single failed save did).
- A file is either absent or complete: readers never see a half-written record.
- Removal is best-effort durable: if it is lost in a crash (or a file's rewrite fails) the
  settled results are re-sent, which the receiver must tolerate anyway (delivery is at least
  once). A result not yet settled is never dropped from its file.
- The directory is 0700 and every file in it 0600: only the sidecar's uid reads the callback
  tokens (a command run with ``--handler-user`` cannot).
- A failed write (full disk, I/O error) leaves no ``*.tmp`` behind: the temp file is removed
  before the error reaches the caller.
- The spool is bounded (``spool_quota``): a run reserves its room when admitted, so the result of
  an admitted run always finds room; ``fit`` trims it to its reservation before it is saved.
- Only the event loop touches the record of which file holds which result; removals run one
  at a time, so two rewrites of one file never race.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cadenza_sidecar import protocol, spool_quota
from cadenza_sidecar.protocol import ExecutionId, ExecutionRequest, Report, RunState
from cadenza_sidecar.settings import SpoolSettings

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""The version of each record (a line of a group file, or the whole of a single file)."""
_SUFFIX = ".jsonl"
_SINGLE_SUFFIX = ".json"
# Stand-ins of the longest values a finished run's record takes where the request does not say:
# the two timestamps (always this long) and the exit code (the room "null" leaves it).
_TIMESTAMP_STAND_IN = "2024-05-01T12:00:00.000Z"
_EXIT_CODE_ROOM = len("-2147483648") - len("null")
MAX_GROUP = 256
"""Results written together at most: bounds how long the first of a group waits for the rest
and how much one file's rewrite carries."""

_Write = tuple[ExecutionId, bytes]


def group_name() -> str:
    """A new group file's name: random, so no two processes or restarts pick the same."""
    return secrets.token_hex(16) + _SUFFIX


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
    """The record of ``report``: one line (compact JSON escapes every newline inside)."""
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
    thread, the quota and the record of which file holds which result are kept on the event
    loop."""

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
        self._files: dict[str, dict[ExecutionId, bytes]] = {}
        """Each file's results not settled yet, with their records (to write a file again)."""
        self._file_of: dict[ExecutionId, str] = {}
        self._removing = asyncio.Lock()

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
        """Every pending result, oldest file first."""
        paths = [
            *self.directory.glob("*" + _SUFFIX),
            *self.directory.glob("*" + _SINGLE_SUFFIX),
        ]
        reports = []
        copies = []
        for path in sorted(paths, key=lambda p: p.stat().st_mtime):
            try:
                lines = [line for line in path.read_bytes().splitlines() if line.strip()]
                found = [_report(protocol.loads(line)) for line in lines]
                if not found:
                    raise ValueError("no record")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                quarantined = path.with_suffix(".corrupt")
                logger.error(
                    "unreadable spool file set aside",
                    extra={"path": str(path), "movedTo": str(quarantined), "reason": repr(exc)},
                )
                with contextlib.suppress(OSError):
                    path.rename(quarantined)
                continue
            for report, line in zip(found, lines, strict=True):
                if report.execution_id in self._file_of:
                    continue  # kept by an older file; this copy goes with its file
                self._hold(path.name, report.execution_id, line)
                self.quota.hold(report.execution_id, len(line))
                reports.append(report)
            if path.name not in self._files:
                copies.append(path)
        self._remove_copies(copies)
        return reports

    def _remove_copies(self, paths: list[Path]) -> None:
        """Files whose every result an older file holds (a spool copied back over itself, say):
        nothing would ever settle them, so they go now; the older files keep those results."""
        if not paths:
            return
        for path in paths:
            logger.warning(
                "spool file holding only copies of older files' results removed",
                extra={"path": str(path)},
            )
            with contextlib.suppress(OSError):
                _unlink(str(path))
        with contextlib.suppress(OSError):
            self._sync_directory()

    def pending(self) -> list[ExecutionId]:
        """The results on disk whose callbacks have not settled."""
        return sorted(self._file_of)

    def _hold(self, name: str, execution_id: ExecutionId, record: bytes) -> None:
        self._files.setdefault(name, {})[execution_id] = record
        self._file_of[execution_id] = name

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
        """Takes settled results off the disk with one directory fsync (a settled batch of
        callbacks): a file left with none is removed, one left with some is written again with
        those. Their room is given back even if that fails: the callbacks are settled either
        way."""
        try:
            async with self._removing:
                changes = self._settle(execution_ids)
                if changes:
                    await asyncio.to_thread(self._change_files, changes)
        finally:
            self.quota.release(execution_ids)

    def _settle(self, execution_ids: list[ExecutionId]) -> dict[str, list[bytes]]:
        """Forget the settled results: per file they were in, the records it keeps (none: the
        file goes)."""
        touched = set()
        for execution_id in execution_ids:
            name = self._file_of.pop(execution_id, None)
            if name is not None:
                del self._files[name][execution_id]
                touched.add(name)
        changes = {}
        for name in touched:
            kept = self._files[name]
            if not kept:
                del self._files[name]
            changes[name] = list(kept.values())
        return changes

    async def _write_groups(self) -> None:
        """Until no save waits: write the waiting ones as one group, then the next."""
        group: list[tuple[_Write, asyncio.Future[None]]] = []
        try:
            while self._waiting:
                group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
                name = group_name()
                failure: BaseException | None = None
                try:
                    await asyncio.to_thread(self._write, name, [data for (_, data), _ in group])
                except Exception as exc:  # a full disk, or a bug: each save of the group hears it
                    failure = exc
                for (execution_id, data), written in group:
                    if failure is None:
                        self._hold(name, execution_id, data)
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

    def _write(self, name: str, records: Sequence[bytes]) -> None:
        """One file of ``records``, durable: written, fsynced, renamed, the directory fsynced."""
        self._replace(name, records)
        self._sync_directory()

    def _replace(self, name: str, records: Sequence[bytes]) -> None:
        final = self._prefix + name
        temp = final + ".tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            try:
                view = memoryview(b"".join(record + b"\n" for record in records))
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

    def _change_files(self, changes: dict[str, list[bytes]]) -> None:
        """Remove each file that keeps no record, write the others again with what they keep,
        then fsync the directory once; raises the first error after trying them all."""
        failure: OSError | None = None
        for name, kept in changes.items():
            try:
                if kept:
                    self._replace(name, kept)
                else:
                    _unlink(self._prefix + name)
            except OSError as exc:
                failure = failure or exc
        try:
            self._sync_directory()
        except OSError as exc:
            failure = failure or exc
        if failure is not None:
            raise failure

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

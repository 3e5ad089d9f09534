"""The sidecar's spool commits results in groups, on a real directory: saves that wait together
are written by one thread hop with one directory fsync, each file durable and readable back, and
one file that cannot be written fails its own save only."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cadenza_sidecar import spool as spool_
from cadenza_sidecar.protocol import ExecutionId, Report, RunState
from cadenza_sidecar.settings import SpoolSettings


def report(n: int) -> Report:
    return Report(
        execution_id=ExecutionId(f"run-{n}-1"),
        status=RunState.SUCCEEDED,
        attempt=1,
        pod="pod-a",
        started_at="2026-12-04T12:00:00.000Z",
        finished_at="2026-12-04T12:00:01.000Z",
        result={"n": n},
        error=None,
        exit_code=None,
        callback_url=f"http://127.0.0.1:1/api/v1/callbacks/{n}",
        callback_token=f"token-{n}",
    )


def spool_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[spool_.Spool, list[int]]:
    """A prepared spool, and the sizes of the groups it writes, as they are written."""
    spool = spool_.Spool(SpoolSettings(directory=tmp_path / "spool"))
    spool.prepare()
    groups: list[int] = []
    save_many = spool._save_many

    def counted(group: list[tuple[ExecutionId, bytes]]) -> list[OSError | None]:
        groups.append(len(group))
        return save_many(group)

    monkeypatch.setattr(spool, "_save_many", counted)
    return spool, groups


async def test_saves_that_wait_together_are_written_as_one_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool, groups = spool_in(tmp_path, monkeypatch)
    await spool.save(report(0))
    assert groups == [1]  # alone, at once

    reports = [report(n) for n in range(1, 301)]
    await asyncio.gather(*(spool.save(r) for r in reports))
    assert groups == [1, spool_.MAX_GROUP, 300 - spool_.MAX_GROUP]
    assert sorted(r.execution_id for r in spool_.Spool(SpoolSettings(spool.directory)).load()) == (
        sorted(r.execution_id for r in [report(0), *reports])
    )
    assert spool.quota.files == 301
    assert not list(spool.directory.glob("*.tmp"))


async def test_one_file_that_cannot_be_written_fails_its_save_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool, groups = spool_in(tmp_path, monkeypatch)
    reports = [report(n) for n in range(5)]
    # A directory where the third one's temp file goes: its open fails, as a full disk would.
    blocked = spool.directory / (spool_.file_name(reports[2].execution_id) + ".tmp")
    blocked.mkdir()
    saved = await asyncio.gather(*(spool.save(r) for r in reports), return_exceptions=True)
    assert groups == [5]
    assert [isinstance(s, OSError) for s in saved] == [False, False, True, False, False]
    assert spool.quota.files == 4
    names = {spool_.file_name(r.execution_id) for r in reports}
    assert set(spool.pending()) == names - {spool_.file_name(reports[2].execution_id)}

"""The sidecar's spool commits results in groups, on a real directory: saves that wait together
are written as one file by one thread hop, readable back; a group that cannot be written fails
each of its saves; a file some of whose results settle keeps the others; the single-record files
of older sidecars are still read and removed; a file holding only copies of an older file's
results goes at start."""

from __future__ import annotations

import asyncio
import os
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
    write = spool._write

    def counted(name: str, records: list[bytes]) -> None:
        groups.append(len(records))
        write(name, records)

    monkeypatch.setattr(spool, "_write", counted)
    return spool, groups


def files(spool: spool_.Spool) -> list[str]:
    return sorted(p.name for p in spool.directory.iterdir())


def reloaded(spool: spool_.Spool) -> list[str]:
    """The ids a restarted sidecar would find in the directory."""
    return sorted(r.execution_id for r in spool_.Spool(SpoolSettings(spool.directory)).load())


async def test_saves_that_wait_together_are_written_as_one_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool, groups = spool_in(tmp_path, monkeypatch)
    await spool.save(report(0))
    assert groups == [1]  # alone, at once

    reports = [report(n) for n in range(1, 301)]
    await asyncio.gather(*(spool.save(r) for r in reports))
    assert groups == [1, spool_.MAX_GROUP, 300 - spool_.MAX_GROUP]
    assert len(files(spool)) == 3
    everyone = sorted(r.execution_id for r in [report(0), *reports])
    assert reloaded(spool) == everyone == spool.pending()
    assert spool.quota.files == 301
    assert not list(spool.directory.glob("*.tmp"))


async def test_a_group_that_cannot_be_written_fails_each_of_its_saves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool, groups = spool_in(tmp_path, monkeypatch)
    monkeypatch.setattr(spool_, "group_name", lambda: "blocked.jsonl")
    # A directory where the group's temp file goes: its open fails, as a full disk would.
    (spool.directory / "blocked.jsonl.tmp").mkdir()
    saved = await asyncio.gather(*(spool.save(report(n)) for n in range(5)), return_exceptions=True)
    assert groups == [5]
    assert all(isinstance(s, OSError) for s in saved)
    assert spool.quota.files == 0
    assert spool.pending() == []
    assert files(spool) == ["blocked.jsonl.tmp"]  # ours: nothing of the spool's left behind


async def test_a_file_keeps_the_results_not_settled_and_goes_with_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool, groups = spool_in(tmp_path, monkeypatch)
    reports = [report(n) for n in range(4)]
    await asyncio.gather(*(spool.save(r) for r in reports))
    assert groups == [4]
    [name] = files(spool)

    await spool.remove_many([reports[0].execution_id, reports[2].execution_id])
    kept = sorted([reports[1].execution_id, reports[3].execution_id])
    assert files(spool) == [name]  # written again, under the same name
    assert reloaded(spool) == kept == spool.pending()
    assert spool.quota.files == 2

    await spool.remove(reports[1].execution_id)
    await spool.remove_many([reports[3].execution_id, reports[0].execution_id])  # one twice
    assert files(spool) == []
    assert spool.pending() == [] and spool.quota.files == 0


async def test_single_record_files_of_older_sidecars_are_read_and_removed(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    directory.mkdir()
    old = [report(n) for n in range(2)]
    for r in old:
        (directory / f"{r.execution_id}.json").write_bytes(spool_.encode(r))
    spool = spool_.Spool(SpoolSettings(directory=directory))
    spool.prepare()
    assert sorted(r.execution_id for r in spool.load()) == [r.execution_id for r in old]
    assert spool.quota.files == 2

    await spool.save(report(2))
    await spool.remove_many([r.execution_id for r in old])
    assert [p.suffix for p in directory.iterdir()] == [".jsonl"]
    assert reloaded(spool) == [report(2).execution_id]


async def test_a_file_holding_only_copies_of_older_results_goes_at_start(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    spool = spool_.Spool(SpoolSettings(directory=directory))
    spool.prepare()
    await asyncio.gather(*(spool.save(report(n)) for n in range(3)))
    [original] = files(spool)
    # Copies of the file's records, written later: two files of copies only, one with a new one.
    os.utime(directory / original, (1, 1))
    lines = (directory / original).read_bytes().splitlines(keepends=True)
    (directory / "copies.jsonl").write_bytes(b"".join(lines[:2]))
    (directory / f"{report(1).execution_id}.json").write_bytes(spool_.encode(report(1)))
    (directory / "mixed.jsonl").write_bytes(lines[2] + spool_.encode(report(3)) + b"\n")

    restarted = spool_.Spool(SpoolSettings(directory=directory))
    restarted.prepare()
    ids = sorted(r.execution_id for r in restarted.load())
    assert ids == [report(n).execution_id for n in range(4)] == restarted.pending()
    assert files(restarted) == sorted([original, "mixed.jsonl"])

    await restarted.remove_many(ids)
    assert files(restarted) == []

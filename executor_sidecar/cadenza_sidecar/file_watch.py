"""Polling for files a Secret volume rewrites in place (the dispatch token, the TLS pair).

The kubelet swaps a mounted Secret's files through a symlink, so inotify on the file sees
nothing reliable; one ``stat`` per file and poll is cheap and always right.

Invariant: ``changed`` is called once per observed change of any watched file (its device,
inode, size or mtime, as ``stat`` follows symlinks), never for a poll that saw none; a file that
vanishes counts as a change, and so does its return.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

Signature = tuple[int, int, int, int] | None
"""(device, inode, size, mtime in ns) of a file; None when it cannot be ``stat``-ed."""


def signature(path: Path) -> Signature:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


async def watch(
    paths: Sequence[Path], poll_seconds: float, changed: Callable[[], Awaitable[None]]
) -> None:
    """Await ``changed()`` whenever one of ``paths`` changed; runs until cancelled."""
    seen = [signature(path) for path in paths]
    while True:
        await asyncio.sleep(poll_seconds)
        now = [signature(path) for path in paths]
        if now != seen:
            seen = now
            await changed()

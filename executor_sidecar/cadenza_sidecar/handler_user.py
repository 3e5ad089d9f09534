"""The user command handlers run as (``--handler-user``), so they cannot read the sidecar's secrets.

A command handler is user code. Run as the sidecar's own uid it could read the dispatch token
file and the spool (every pending result's callback token). With ``--handler-user`` each command
runs as another uid and gid, with no supplementary groups, while the spool directory is 0700 and
its files 0600 (:mod:`cadenza_sidecar.spool`) and the token file must not be readable by that
user (:func:`readable_by`; mount the Secret with ``defaultMode: 0400``).

Invariants:
- Resolved and checked once, at start: an unknown user or group, the sidecar's own uid, a
  sidecar without the right to switch users and signal them (root, or CAP_SETUID,
  CAP_SETGID and CAP_KILL) or a token file
  the handler user could read ends the start with a message naming the flag and the fix.
- Switching happens in the child between fork and exec (``subprocess``'s ``user``/``group``/
  ``extra_groups``), so a command never runs a single instruction as the sidecar's user.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import stat
from pathlib import Path

_CAP_KILL, _CAP_SETGID, _CAP_SETUID = 5, 6, 7
_NEEDED = (_CAP_KILL, _CAP_SETGID, _CAP_SETUID)


@dataclasses.dataclass(frozen=True)
class HandlerUser:
    uid: int
    gid: int
    name: str
    """As given (``nobody``, ``1000:1000``), for messages."""


def parse(raw: str) -> HandlerUser:
    """``NAME|UID[:GROUP|GID]``; without a group, the user's primary group (else gid = uid).
    Raises ValueError with the rule broken."""
    user, _, group = raw.strip().partition(":")
    if not user:
        raise ValueError("must be NAME, UID, NAME:GROUP or UID:GID")
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        uid, gid = entry.pw_uid, entry.pw_gid
    except KeyError:
        if not user.isdigit():
            raise ValueError(f"names no user of this system ({user!r})") from None
        uid = gid = int(user)  # a uid without a passwd entry, as images often run
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ValueError(f"names no group of this system ({group!r})") from None
    return HandlerUser(uid, gid, raw.strip())


def _effective_capabilities() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return None


def cannot_switch_reason(user: HandlerUser) -> str | None:
    """Why this process cannot run commands as ``user``; None when it can."""
    if user.uid == os.geteuid():
        return "is the sidecar's own uid, which gives handlers nothing to be kept from"
    if user.uid == 0:
        return "is root, who reads every file: name an unprivileged user"
    caps = _effective_capabilities()
    allowed = os.geteuid() == 0 if caps is None else all(caps >> cap & 1 for cap in _NEEDED)
    if allowed:
        return None
    return (
        f"needs the sidecar to run as root or with CAP_SETUID, CAP_SETGID and CAP_KILL (to stop"
        f" the commands it started); it runs as uid {os.geteuid()} without them: add those"
        " capabilities to its securityContext, or drop the flag"
    )


def readable_by(path: Path, user: HandlerUser) -> bool:
    """Whether ``user`` (uid, gid, no other groups) may read ``path`` by its mode bits."""
    st = path.stat()
    if st.st_uid == user.uid:
        return bool(st.st_mode & stat.S_IRUSR)
    if st.st_gid == user.gid:
        return bool(st.st_mode & stat.S_IRGRP)
    return bool(st.st_mode & stat.S_IROTH)

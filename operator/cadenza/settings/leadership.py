"""``CADENZA_LOCK_NAME``, ``CADENZA_LEASE_SECONDS`` and their kin: how replicas elect one leader
through a MySQL ``GET_LOCK`` and how long a lost leader may still act."""

from __future__ import annotations

from dataclasses import dataclass

from cadenza.settings.reading import Reader, SettingsError


@dataclass(frozen=True)
class LeadershipSettings:
    lock_name: str = "cadenza.leader"
    """Name passed to MySQL ``GET_LOCK``; replicas sharing it elect one leader
    (``CADENZA_LOCK_NAME``). Two installations on one database need different names."""

    lease_seconds: int = 15
    """L: the lock session's ``wait_timeout``, so a frozen leader's lock frees after about L
    seconds; the heartbeat runs every L/3 and the dispatcher stops sending L - margin after the
    last good heartbeat (``CADENZA_LEASE_SECONDS``)."""

    acquire_timeout_seconds: int = 2
    """How long a follower blocks in one ``GET_LOCK`` call before looking around again
    (``CADENZA_ACQUIRE_TIMEOUT_SECONDS``)."""

    max_clock_skew_seconds: float = 2.0
    """A replica whose clock differs from the database's ``NOW()`` by more than this refuses to
    lead: fire times are compared with the local clock (``CADENZA_MAX_CLOCK_SKEW_SECONDS``)."""

    @property
    def safety_margin_seconds(self) -> float:
        """Slack between "my last heartbeat was fine" and "someone else may lead now"."""
        return max(1.0, self.lease_seconds / 5)


def read_lease(read: Reader) -> tuple[int, int]:
    """The lease and the acquire timeout, which must be below it. Read apart from
    :func:`read_leadership`, before the database's variables, so that of several bad values
    these are still the ones reported first."""
    lease = read("CADENZA_LEASE_SECONDS", int, 15, minimum=3, maximum=3600)
    acquire = read("CADENZA_ACQUIRE_TIMEOUT_SECONDS", int, 2, minimum=1, maximum=60)
    if acquire >= lease:
        raise SettingsError(
            f"CADENZA_ACQUIRE_TIMEOUT_SECONDS ({acquire}) must be below "
            f"CADENZA_LEASE_SECONDS ({lease})"
        )
    return lease, acquire


def read_leadership(read: Reader, lease: int, acquire: int) -> LeadershipSettings:
    """The section, around the lease and acquire timeout :func:`read_lease` checked."""
    return LeadershipSettings(
        lock_name=read("CADENZA_LOCK_NAME", str, "cadenza.leader"),
        lease_seconds=lease,
        acquire_timeout_seconds=acquire,
        max_clock_skew_seconds=read(
            "CADENZA_MAX_CLOCK_SKEW_SECONDS", float, 2.0, minimum=0.01, maximum=3600
        ),
    )

"""``CADENZA_NAMESPACES`` and ``KUBECONFIG``: which part of the cluster the operator watches and
how it logs in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class KubeSettings:
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch, comma-separated (``CADENZA_NAMESPACES``); empty = cluster-wide."""

    kubeconfig: str | None = None
    """Kubeconfig to log in with outside a cluster (``KUBECONFIG``); in a pod the service
    account is used."""


def read_kube(env: Mapping[str, str], namespaces: str) -> KubeSettings:
    """The section from the raw ``CADENZA_NAMESPACES``, which the API's default namespace also
    derives from. ``KUBECONFIG`` is the Kubernetes tools' variable, not ours: taken as set."""
    return KubeSettings(
        namespaces=tuple(n.strip() for n in namespaces.split(",") if n.strip()),
        kubeconfig=env.get("KUBECONFIG") or None,
    )

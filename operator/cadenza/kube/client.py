"""The synchronous Kubernetes client the operator uses for its own writes and checks.

kopf does the watching; this client does the few direct calls (status patches, Events, listings
for the readiness check). WARNING: every call blocks, so callers on the event loop go through
``asyncio.to_thread`` (the replica's bounded default executor).
"""

from __future__ import annotations

from typing import Any, cast

import kubernetes

from cadenza.settings import KubeSettings

ConfigError = kubernetes.config.ConfigException
"""A kubeconfig or in-cluster configuration that cannot be used."""


def api_client(settings: KubeSettings) -> kubernetes.client.ApiClient:
    """An ApiClient logged in the same way as kopf: kubeconfig when given, else in-cluster."""
    config = kubernetes.client.Configuration()
    if settings.kubeconfig:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=settings.kubeconfig, client_configuration=config
        )
    else:
        kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=config
        )
    return kubernetes.client.ApiClient(config)


def list_uids(client: kubernetes.client.ApiClient, namespaces: tuple[str, ...]) -> set[str]:
    """UIDs of every Task, Executor and Pod the replica watches, as of now."""
    custom = kubernetes.client.CustomObjectsApi(client)
    core = kubernetes.client.CoreV1Api(client)
    uids: set[str] = set()
    for plural in ("tasks", "executors"):
        if namespaces:
            items: list[dict[str, Any]] = []
            for ns in namespaces:
                listed = custom.list_namespaced_custom_object("cadenza.dev", "v1alpha1", ns, plural)
                items += cast(dict[str, Any], listed)["items"]
        else:
            listed = custom.list_cluster_custom_object("cadenza.dev", "v1alpha1", plural)
            items = cast(dict[str, Any], listed)["items"]
        uids.update(item["metadata"]["uid"] for item in items)
    pods = (
        [p for ns in namespaces for p in core.list_namespaced_pod(ns).items]
        if namespaces
        else core.list_pod_for_all_namespaces().items
    )
    uids.update(p.metadata.uid for p in pods if p.metadata and p.metadata.uid)
    return uids

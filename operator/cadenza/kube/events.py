"""Kubernetes Events about Tasks, as ``kubectl describe task`` shows them.

WARNING: posting is a blocking call of the Kubernetes client: call it from a thread. A failure to
post is logged and dropped; an Event is never worth failing the work it reports on.
"""

from __future__ import annotations

import datetime as dt
import logging

import kubernetes

log = logging.getLogger(__name__)

GROUP, VERSION = "cadenza.dev", "v1alpha1"


class EventPoster:
    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self._core = kubernetes.client.CoreV1Api(client)

    def post(
        self, namespace: str, name: str, uid: str, kind: str, reason: str, message: str
    ) -> None:
        """Post one Event (``kind``: Normal or Warning) about the Task ``namespace/name``."""
        now = dt.datetime.now(dt.UTC)
        event = kubernetes.client.CoreV1Event(
            metadata=kubernetes.client.V1ObjectMeta(generate_name=f"{name}."),
            involved_object=kubernetes.client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}",
                kind="Task",
                name=name,
                namespace=namespace,
                uid=uid,
            ),
            reason=reason,
            message=message[:1024],
            type=kind,
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=kubernetes.client.V1EventSource(component="cadenza"),
            reporting_component="cadenza.dev/operator",
            reporting_instance="cadenza",
        )
        try:
            self._core.create_namespaced_event(namespace, event)
        except kubernetes.client.ApiException as exc:
            log.warning("posting event %s for task %s/%s failed: %s",
                        reason, namespace, name, exc.reason)  # fmt: skip

"""The REST API's reads and writes of Executor objects and their dispatch-token Secrets, made
with the operator's own identity.

Invariant: the API calls these only after SubjectAccessReview allowed the caller the matching
verb on ``executors.cadenza.dev``; the objects stay the source of truth, nothing is cached.
Objects go in and come out as plain dicts; failures as :class:`~cadenza.kube.objects.ApiError`.

WARNING: every method blocks on the network; call it from a thread, never on the event loop.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import kubernetes

from cadenza.kube.custom import CustomObjects
from cadenza.kube.objects import GROUP, VERSION, ApiClient, call

PLURAL = "executors"


class Executors(CustomObjects):
    def __init__(self, client: ApiClient) -> None:
        super().__init__(client, PLURAL)
        self._core = kubernetes.client.CoreV1Api(client)

    def list(self, namespace: str) -> list[dict[str, Any]]:
        """Every Executor of the namespace ("" lists every namespace)."""
        return self.page(namespace).items

    def token_secret(self, namespace: str, name: str, key: str) -> str | None:
        """The text under ``key`` of the Secret, None when it has none."""
        secret = call(lambda: self._core.read_namespaced_secret(name, namespace))
        raw = (secret.data or {}).get(key)
        return None if raw is None else base64.b64decode(raw).decode().strip()

    def create_token_secret(
        self, owner: Mapping[str, Any], name: str, key: str, token: str
    ) -> None:
        """A Secret holding ``token`` under ``key``, owned by the Executor ``owner`` (so the
        garbage collector deletes it with the Executor)."""
        meta = owner["metadata"]
        body = kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(
                name=name,
                namespace=meta["namespace"],
                labels={"app.kubernetes.io/managed-by": "cadenza"},
                owner_references=[
                    kubernetes.client.V1OwnerReference(
                        api_version=f"{GROUP}/{VERSION}",
                        kind="Executor",
                        name=meta["name"],
                        uid=meta["uid"],
                    )
                ],
            ),
            type="Opaque",
            string_data={key: token},
        )
        call(lambda: self._core.create_namespaced_secret(meta["namespace"], body))

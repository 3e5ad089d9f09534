"""The REST API's reads and writes of Executor objects (and, through
:mod:`cadenza.kube.token_secrets`, their dispatch-token Secrets), made with the operator's own
identity.

Invariant: the API calls these only after SubjectAccessReview allowed the caller the matching
verb on ``executors.cadenza.dev``; the objects stay the source of truth, nothing is cached.
Objects go in and come out as plain dicts; failures as :class:`~cadenza.kube.objects.ApiError`.

WARNING: every method blocks on the network; call it from a thread, never on the event loop.
"""

from __future__ import annotations

from typing import Any

from cadenza.kube.custom import CustomObjects
from cadenza.kube.objects import ApiClient
from cadenza.kube.token_secrets import TokenSecrets

PLURAL = "executors"


class Executors(CustomObjects):
    def __init__(self, client: ApiClient) -> None:
        super().__init__(client, PLURAL)
        self.token_secrets = TokenSecrets(client)
        """The Executors' own dispatch-token Secrets (the same code the leader's pool uses)."""

    def list(self, namespace: str) -> list[dict[str, Any]]:
        """Every Executor of the namespace ("" lists every namespace)."""
        return self.page(namespace).items
